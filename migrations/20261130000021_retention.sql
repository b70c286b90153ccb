-- Retention (FORMPUSH_RETENTION_DAYS, default 90 days): the daily clean-up deletes the
-- deliveries of runs that finished longer ago than that, and triggered messages in a final
-- state whose last change is that old. Only nullable columns, a check on a small table
-- and a small index: applies to a database in use as well as to a fresh one.

-- A run's totals when the clean-up took them over from its deliveries, as
-- {"targeted": n, "sent": n, "failed": n, "no_formid": n, "no_quota": n, "capped": n,
-- "pending": n}. Set before any of its deliveries is deleted, in one statement; from then
-- on the run's totals (and its campaign's) are read from here only, so they stay the same
-- while its deliveries are deleted, after, and if the deleting stopped halfway.
alter table campaign_runs add column archived_totals jsonb;
-- When the last of the run's deliveries was deleted; null while any may be left.
alter table campaign_runs add column purged_at timestamptz;
alter table campaign_runs add constraint campaign_runs_purged_archived
    check (purged_at is null or archived_totals is not null);
-- The runs whose deliveries are still kept, by finish: what the clean-up looks through
-- (runs still going have no finish yet). Once purged a run leaves the index, so it holds
-- about a retention's worth of runs; on an existing database it starts with every run,
-- one small row each.
create index campaign_runs_unpurged on campaign_runs (finished_at) where purged_at is null;
