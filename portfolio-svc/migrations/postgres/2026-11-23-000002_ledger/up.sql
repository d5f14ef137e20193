-- Deposits credited by deposit-svc (PortfolioLedger.ApplyDeposit). The transfer id makes
-- crediting idempotent; reads add on top of a snapshot the deposits confirmed after its
-- as_of (a later snapshot includes them upstream). Instants are microseconds since the
-- Unix epoch.
CREATE TABLE ledger_deposits (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    account_number TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    confirmed_at BIGINT NOT NULL,
    applied_at BIGINT NOT NULL
);
-- The overlay of one account (or one page of accounts): covering, so an index-only scan.
CREATE INDEX ledger_deposits_by_account ON ledger_deposits (account_number, confirmed_at) INCLUDE (amount);
