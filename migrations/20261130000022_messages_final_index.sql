-- no-transaction
-- Triggered messages in a final state by their last change: the daily clean-up deletes
-- those older than the retention (FORMPUSH_RETENTION_DAYS) through this index, a batch at
-- a time, instead of reading the whole table. Built without blocking message writes on an
-- existing database (hence outside a transaction, alone in its file).
create index concurrently if not exists messages_final on messages (updated_at)
    where status in ('sent', 'failed', 'no_formid', 'no_quota', 'cancelled');
