-- no-transaction
-- Filling a run with audience `all` walks an app's users in id order, a chunk at a time.
-- Built without blocking logins on an existing database (hence outside a transaction).
create index concurrently if not exists users_by_app on users (appid, id);
