-- A loading partition carries the readers' indexes from the start, so that the rows are
-- indexed as they arrive and `ATTACH PARTITION` at the end of the stream finds the indexes
-- there and attaches them instead of building them (issue 16: the build at the end of the
-- load was what made reads and deposits wait around the switch). The partitions of loads in
-- progress get them too (`ALTER TABLE … ADD` on a partitioned table recurses).
ALTER TABLE instruments_loading ADD PRIMARY KEY (snapshot_id, isin);
ALTER TABLE accounts_loading ADD PRIMARY KEY (snapshot_id, account_number);
CREATE INDEX accounts_loading_by_owner ON accounts_loading (snapshot_id, customer_name, account_number) INCLUDE (brokerage, account_name, principal, total_assets);
ALTER TABLE holdings_loading ADD PRIMARY KEY (snapshot_id, account_number, isin);
