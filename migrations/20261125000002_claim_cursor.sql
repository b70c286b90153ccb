-- The sender walks a run's pending deliveries in id order with a cursor (id > last), so
-- the dead index entries that claimed rows leave behind are skipped by the range instead
-- of rescanned on every claim.
drop index deliveries_pending;
create index deliveries_pending on deliveries (run_id, id) where status = 'pending';

-- The claim reaches a user's few formIds through formids_claim_freshest (user_id first)
-- and sorts them; a second per-user index only cost every insert and claim a write.
drop index formids_claim_expiring;
