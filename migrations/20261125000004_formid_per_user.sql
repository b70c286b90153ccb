-- formIds are unique per user, not per app, and no longer carry a foreign key to users.
--
-- * WeChat ties a formId to the user whose form produced it, and Android's formIds are
--   millisecond timestamps that two users of one app can share; per-app uniqueness dropped
--   the second user's credit as a "duplicate". Per user, a re-posted formId is still
--   stored once.
-- * The index now groups a user's formIds together: an insert touches the user's few index
--   pages instead of a random page of an index over every formId of every user, which kept
--   ingestion latency growing with the table (full-page writes after each checkpoint).
-- * The foreign key cost every inserted formId a key-share lock on its user row (a WAL
--   record and a dirtied users page): ~25–30 % of ingestion and import. Users are never
--   deleted, and the user ids written here come from signed session tokens or from the
--   import's own upsert in the same request, so the check guarded nothing.
alter table formids drop constraint formids_user_id_fkey;
alter table formids drop constraint formids_appid_form_id_key;
alter table formids add constraint formids_user_id_form_id_key unique (user_id, form_id);
