-- The account directory (account number → owner) of each daily delivery. Entries are written
-- while the directory is 'loading' (unused); one short transaction makes it 'current'.
-- Instants are microseconds since the Unix epoch.
CREATE TABLE directories (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    as_of BIGINT NOT NULL,
    digest TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('loading', 'current', 'retired')),
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    finished_at BIGINT,
    entry_count BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX directories_one_current ON directories (state) WHERE state = 'current';
CREATE INDEX directories_by_state ON directories (state, as_of);

CREATE TABLE directory_entries (
    directory_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    PRIMARY KEY (directory_id, account_number)
);

-- One row per transfer. 'pending' becomes 'confirmed' (once, by compare-and-set),
-- 'expired' or 'rejected'; applied_at is set when portfolio-svc has credited it.
CREATE TABLE deposits (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    request_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'expired', 'rejected')),
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    applied_at BIGINT
);
-- AIP-155: a request id names one registration per caller.
CREATE UNIQUE INDEX deposits_by_request ON deposits (owner, request_id) WHERE request_id IS NOT NULL;
-- History, newest first: all of a caller's accounts, or one.
CREATE INDEX deposits_by_owner ON deposits (owner, created_at, transfer_id);
CREATE INDEX deposits_by_account ON deposits (owner, account_number, created_at, transfer_id);
-- The expiry sweep.
CREATE INDEX deposits_pending ON deposits (expires_at) WHERE status = 'pending';

-- Confirmed deposits not yet credited in portfolio-svc. Written in the same transaction as
-- the confirmation; deleted in the same transaction that records the credit. A delivery
-- holds a lease (lease_owner, lease_until) so that two replicas never deliver one row at once.
CREATE TABLE outbox (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    account_number TEXT NOT NULL,
    amount BIGINT NOT NULL,
    confirmed_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);
