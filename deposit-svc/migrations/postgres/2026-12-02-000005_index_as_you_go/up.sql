-- A loading partition carries the readers' primary key from the start, so that entries are
-- indexed as they arrive and `ATTACH PARTITION` at the end of the stream attaches the index
-- instead of building it (see portfolio-svc's migration of the same name).
ALTER TABLE directory_entries_loading ADD PRIMARY KEY (directory_id, account_number);
