-- Withdrawals (PortfolioLedger.HoldCash, TakeHold, ReleaseHold); see the PostgreSQL
-- migration of the same name for the design.
--
-- SQLite cannot change a CHECK in place: ledger_deposits is rebuilt with CHECK (amount <> 0)
-- (a taken withdrawal is a negative movement), and its index and triggers are created again
-- as they were.
CREATE TABLE ledger_deposits_new (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    account_number TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount <> 0),
    confirmed_at BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    running BIGINT NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO ledger_deposits_new (transfer_id, account_number, amount, confirmed_at, applied_at, running)
    SELECT transfer_id, account_number, amount, confirmed_at, applied_at, running FROM ledger_deposits;
DROP TABLE ledger_deposits;
ALTER TABLE ledger_deposits_new RENAME TO ledger_deposits;
CREATE INDEX ledger_deposits_running ON ledger_deposits (account_number, confirmed_at, transfer_id, running);

CREATE TRIGGER ledger_accounts_until AFTER INSERT ON ledger_deposits
WHEN NOT EXISTS (
    SELECT 1 FROM ledger_accounts
    WHERE account_number = NEW.account_number AND deposits_until > NEW.confirmed_at
)
BEGIN
    INSERT INTO ledger_accounts (account_number, deposits_until)
        VALUES (NEW.account_number, (NEW.confirmed_at / 3600000000 + 1) * 3600000000)
        ON CONFLICT (account_number) DO UPDATE
            SET deposits_until = excluded.deposits_until
            WHERE excluded.deposits_until > ledger_accounts.deposits_until;
END;

CREATE TRIGGER ledger_deposits_running AFTER INSERT ON ledger_deposits
BEGIN
    UPDATE ledger_deposits SET running = running + NEW.amount
        WHERE account_number = NEW.account_number
          AND (confirmed_at, transfer_id) > (NEW.confirmed_at, NEW.transfer_id);
    UPDATE ledger_deposits SET running = NEW.amount + COALESCE((
            SELECT running FROM ledger_deposits
            WHERE account_number = NEW.account_number
              AND (confirmed_at, transfer_id) < (NEW.confirmed_at, NEW.transfer_id)
            ORDER BY confirmed_at DESC, transfer_id DESC
            LIMIT 1), 0)
        WHERE transfer_id = NEW.transfer_id;
END;

CREATE TABLE ledger_holds (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    account_number TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL CHECK (state IN ('held', 'taken', 'released')),
    held_at BIGINT,
    closed_at BIGINT
) WITHOUT ROWID;

ALTER TABLE ledger_accounts ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0);
