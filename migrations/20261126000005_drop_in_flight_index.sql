-- Every claim moves a delivery to 'sending', which added an entry to this index (the
-- update is never HOT: status is indexed). Its one reader, the stale-lease recovery, finds
-- the same rows through deliveries_by_campaign (campaign_id, status, id) per campaign of
-- the app, so the index only cost writes.
drop index if exists deliveries_in_flight;
