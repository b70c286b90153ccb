-- A run's deliveries are created in chunks while it already sends (a campaign to millions
-- of users must not wait for one huge insert before its first message). `filling` runs
-- still have users to add: those of the audience with ids in (filled_through, fill_until].
-- fill_until is the audience's last user id when the run started, so users who arrive
-- later are not added, as when the deliveries were created at once. Existing runs are
-- complete.
alter table campaign_runs
    add column filling boolean not null default false,
    add column filled_through bigint not null default 0,
    add column fill_until bigint not null default 0;
