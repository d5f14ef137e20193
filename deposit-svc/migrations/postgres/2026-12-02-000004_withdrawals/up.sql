-- Withdrawals: the two phases of deposits in the other direction. Phase 1 holds the amount
-- in portfolio-svc (PortfolioLedger.HoldCash) before it answers; `held` says portfolio-svc
-- answered that hold. Phase 2 takes it, cancel / expiry / rejection release it: both through
-- the outbox, delivered exactly once like a deposit's credit.
CREATE TABLE withdrawals (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    request_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'expired', 'rejected', 'cancelled')),
    held BOOLEAN NOT NULL DEFAULT FALSE,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    applied_at BIGINT
);
CREATE UNIQUE INDEX withdrawals_by_request ON withdrawals (owner, request_id);
CREATE INDEX withdrawals_by_owner ON withdrawals (owner, created_at, transfer_id);
CREATE INDEX withdrawals_by_account ON withdrawals (owner, account_number, created_at, transfer_id);
CREATE INDEX withdrawals_by_status ON withdrawals (status, expires_at);

-- What a delivery does: credit a deposit, take or release a withdrawal's hold.
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'deposit' CHECK (kind IN ('deposit', 'take', 'release'));
