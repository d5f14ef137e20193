-- Daily snapshots. Rows of a snapshot are written while it is 'loading' (invisible to
-- readers); one short transaction makes it 'current'. Instants are microseconds since the
-- Unix epoch.
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    as_of BIGINT NOT NULL,
    digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('loading', 'current', 'retired')),
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    finished_at BIGINT,
    instrument_count BIGINT NOT NULL DEFAULT 0,
    account_count BIGINT NOT NULL DEFAULT 0,
    holding_count BIGINT NOT NULL DEFAULT 0
);
-- At most one current snapshot, enforced by the database itself.
CREATE UNIQUE INDEX snapshots_one_current ON snapshots (state) WHERE state = 'current';
CREATE INDEX snapshots_by_state ON snapshots (state, as_of);

CREATE TABLE instruments (
    snapshot_id BIGINT NOT NULL,
    isin TEXT NOT NULL,
    name TEXT NOT NULL,
    asset_group TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, isin)
) WITHOUT ROWID;

CREATE TABLE accounts (
    snapshot_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    brokerage TEXT NOT NULL,
    account_name TEXT NOT NULL,
    principal BIGINT NOT NULL CHECK (principal >= 0),
    total_assets BIGINT NOT NULL CHECK (total_assets >= 0),
    PRIMARY KEY (snapshot_id, account_number)
) WITHOUT ROWID;
-- The investment screen: a customer's accounts in one snapshot, in account order. Covering,
-- so that it is the obvious plan even before the planner has statistics.
CREATE INDEX accounts_by_owner ON accounts (snapshot_id, customer_name, account_number, brokerage, account_name, principal, total_assets);

CREATE TABLE holdings (
    snapshot_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    isin TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    current_price BIGINT NOT NULL CHECK (current_price >= 0),
    valuation BIGINT NOT NULL CHECK (valuation >= 0),
    PRIMARY KEY (snapshot_id, account_number, isin)
) WITHOUT ROWID;
