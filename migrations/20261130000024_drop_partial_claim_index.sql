-- no-transaction
-- Replaced by formids_by_user_freshest (the previous migration).
drop index concurrently if exists formids_claim_freshest;
