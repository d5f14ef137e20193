-- Back to one table per kind of row (loads in progress are dropped).
DELETE FROM current_snapshot WHERE snapshot_id IN (SELECT id FROM snapshots WHERE state = 'loading');
DELETE FROM snapshots WHERE state = 'loading';
DROP TABLE instruments_loading, accounts_loading, holdings_loading;

CREATE TABLE instruments_unpartitioned (LIKE instruments INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO instruments_unpartitioned SELECT * FROM instruments;
CREATE TABLE accounts_unpartitioned (LIKE accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO accounts_unpartitioned SELECT * FROM accounts;
CREATE TABLE holdings_unpartitioned (LIKE holdings INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO holdings_unpartitioned SELECT * FROM holdings;
DROP TABLE instruments, accounts, holdings;

ALTER TABLE instruments_unpartitioned RENAME TO instruments;
ALTER TABLE accounts_unpartitioned RENAME TO accounts;
ALTER TABLE accounts ADD PRIMARY KEY (snapshot_id, account_number);
CREATE INDEX accounts_by_owner ON accounts (snapshot_id, customer_name, account_number) INCLUDE (brokerage, account_name, principal, total_assets);
ALTER TABLE holdings_unpartitioned RENAME TO holdings;
ALTER TABLE instruments ADD PRIMARY KEY (snapshot_id, isin);
ALTER TABLE holdings ADD PRIMARY KEY (snapshot_id, account_number, isin);
