-- The day each daily job last ran. Every instance's clock fires the daily clean-up; the
-- first to claim the day runs it, the others skip it (their deletes would only wait on
-- each other's).
create table daily_jobs (
    job    text primary key,
    ran_on date not null
);
