-- Withdrawals (PortfolioLedger.HoldCash, TakeHold, ReleaseHold).
--
-- A taken withdrawal is a movement of the account's cash like a deposit, with the opposite
-- sign: it goes into ledger_deposits with a negative amount, so that the running sums, the
-- overlay on top of a snapshot and ledger_accounts.deposits_until treat both alike.
ALTER TABLE ledger_deposits DROP CONSTRAINT ledger_deposits_amount_check;
ALTER TABLE ledger_deposits ADD CONSTRAINT ledger_deposits_amount_check CHECK (amount <> 0);

-- One row per withdrawal portfolio-svc has heard of: held, then taken or released (or
-- released without ever being held, when ReleaseHold came first: the row then refuses a late
-- HoldCash). Instants are microseconds since the Unix epoch.
CREATE TABLE ledger_holds (
    transfer_id TEXT NOT NULL PRIMARY KEY,
    account_number TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL CHECK (state IN ('held', 'taken', 'released')),
    held_at BIGINT,
    closed_at BIGINT
);

-- The cash held by an account's pending withdrawals, kept in the same transaction as the
-- hold, take or release that changes it (under the account's lock), so that the read path
-- gets it in the statement that reads the account.
ALTER TABLE ledger_accounts ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0);

-- Every replica forgets what it keeps of an account's cash when its held cash changes (a
-- trigger, like the deposits', so that the notification exists exactly when the change
-- commits, whoever wrote it; see portfolio-svc/src/cache.rs).
CREATE FUNCTION ledger_accounts_held_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invest_portfolio', 'd' || NEW.account_number);
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_accounts_held_changed AFTER UPDATE OF held ON ledger_accounts
    FOR EACH ROW WHEN (OLD.held IS DISTINCT FROM NEW.held)
    EXECUTE FUNCTION ledger_accounts_held_notify();
CREATE TRIGGER ledger_accounts_held_inserted AFTER INSERT ON ledger_accounts
    FOR EACH ROW WHEN (NEW.held <> 0)
    EXECUTE FUNCTION ledger_accounts_held_notify();
