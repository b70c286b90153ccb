-- Every formId insert paid for this index; the daily purge now walks the table in primary
-- key ranges instead (short transactions, no extra index), and stats reach an app's rows
-- through the (appid, form_id) unique index.
drop index formids_by_app_expiry;
