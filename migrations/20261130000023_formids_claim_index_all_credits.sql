-- no-transaction
-- The claim's index without its `where uses_left > 0 and not invalid`. Spending a formId
-- changes `uses_left`, and a column in an index's predicate forbids a HOT update: every
-- claim wrote three new index entries for the formId it spent (measured: 0 of 100,000
-- claims HOT). Without the predicate no indexed column changes, so the new version stays
-- on its page and no index is written (with the room below). The claim still skips spent
-- formIds, now by reading their rows: a user has a few, and the daily clean-up deletes
-- spent ones.
-- Built without blocking ingestion on an existing database (hence outside a transaction);
-- the old index goes in the next migration.
create index concurrently if not exists formids_by_user_freshest
    on formids (user_id, created_at desc) include (expires_at);
