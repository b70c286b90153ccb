-- Room on each page for the claims' HOT updates (see 20261130000023): pages filled by
-- ingestion keep a fifth free, and the space of spent versions is reclaimed as pages are
-- read. Applies to pages written from now on. Takes a lock that lets reads and writes go on.
alter table formids set (fillfactor = 80);
