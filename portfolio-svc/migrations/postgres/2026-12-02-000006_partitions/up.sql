-- Each snapshot's rows in partitions of their own, so that pruning a snapshot is a detach and
-- a drop (constant time, no dead rows, no vacuum debt) instead of a delete of every row; see
-- runtime/src/staged.rs. A load writes into `{table}_v{id}`, a partition of `{table}_loading`
-- (same columns, no indexes, read by nobody), which moves to `{table}` at the end of the
-- stream (ATTACH builds its indexes).
--
-- This migration copies the kept snapshots into their partitions once. A load in progress
-- while it runs is dropped (its loader gets an error and sends the day again).
DELETE FROM current_snapshot WHERE snapshot_id IN (SELECT id FROM snapshots WHERE state = 'loading');
DELETE FROM snapshots WHERE state = 'loading';

ALTER TABLE instruments RENAME TO instruments_unpartitioned;
ALTER INDEX instruments_pkey RENAME TO instruments_unpartitioned_pkey;
ALTER TABLE accounts RENAME TO accounts_unpartitioned;
ALTER INDEX accounts_pkey RENAME TO accounts_unpartitioned_pkey;
ALTER INDEX accounts_by_owner RENAME TO accounts_unpartitioned_by_owner;
ALTER TABLE holdings RENAME TO holdings_unpartitioned;
ALTER INDEX holdings_pkey RENAME TO holdings_unpartitioned_pkey;

CREATE TABLE instruments (
    snapshot_id BIGINT NOT NULL,
    isin TEXT NOT NULL,
    name TEXT NOT NULL,
    asset_group TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, isin)
) PARTITION BY LIST (snapshot_id);

CREATE TABLE accounts (
    snapshot_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    brokerage TEXT NOT NULL,
    account_name TEXT NOT NULL,
    principal BIGINT NOT NULL CHECK (principal >= 0),
    total_assets BIGINT NOT NULL CHECK (total_assets >= 0),
    PRIMARY KEY (snapshot_id, account_number)
) PARTITION BY LIST (snapshot_id);
-- The investment screen: a customer's accounts in one snapshot, in account order. Covering,
-- so that the page is an index-only scan.
CREATE INDEX accounts_by_owner ON accounts (snapshot_id, customer_name, account_number) INCLUDE (brokerage, account_name, principal, total_assets);

CREATE TABLE holdings (
    snapshot_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    isin TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    current_price BIGINT NOT NULL CHECK (current_price >= 0),
    valuation BIGINT NOT NULL CHECK (valuation >= 0),
    PRIMARY KEY (snapshot_id, account_number, isin)
) PARTITION BY LIST (snapshot_id);

CREATE TABLE instruments_loading (LIKE instruments INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (snapshot_id);
CREATE TABLE accounts_loading (LIKE accounts INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (snapshot_id);
CREATE TABLE holdings_loading (LIKE holdings INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (snapshot_id);

DO $$
DECLARE
    s BIGINT;
BEGIN
    FOR s IN SELECT id FROM snapshots ORDER BY id LOOP
        EXECUTE format('CREATE TABLE instruments_v%s PARTITION OF instruments FOR VALUES IN (%s)', s, s);
        EXECUTE format('CREATE TABLE accounts_v%s PARTITION OF accounts FOR VALUES IN (%s)', s, s);
        EXECUTE format('CREATE TABLE holdings_v%s PARTITION OF holdings FOR VALUES IN (%s)', s, s);
    END LOOP;
END
$$;

INSERT INTO instruments (snapshot_id, isin, name, asset_group)
    SELECT snapshot_id, isin, name, asset_group FROM instruments_unpartitioned
    WHERE snapshot_id IN (SELECT id FROM snapshots);
INSERT INTO accounts (snapshot_id, account_number, customer_name, brokerage, account_name, principal, total_assets)
    SELECT snapshot_id, account_number, customer_name, brokerage, account_name, principal, total_assets
    FROM accounts_unpartitioned
    WHERE snapshot_id IN (SELECT id FROM snapshots);
INSERT INTO holdings (snapshot_id, account_number, isin, quantity, current_price, valuation)
    SELECT snapshot_id, account_number, isin, quantity, current_price, valuation FROM holdings_unpartitioned
    WHERE snapshot_id IN (SELECT id FROM snapshots);

DROP TABLE instruments_unpartitioned, accounts_unpartitioned, holdings_unpartitioned;
