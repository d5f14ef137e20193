-- One row per account that has deposits, with an instant no deposit to the account was
-- confirmed after: the latest confirmation rounded up to the next hour, so that the row
-- changes at most once an hour per account (concurrent deposits to one account do not queue
-- on it). A holdings page reads it in the same statement as the page and sums the deposits
-- only when this instant is after the snapshot's as_of (most reads: it is not). A trigger
-- keeps it, not the application, so that a replica of the previous version still running
-- during a rolling update keeps it too.
CREATE TABLE ledger_accounts (
    account_number TEXT NOT NULL PRIMARY KEY,
    deposits_until BIGINT NOT NULL
) WITHOUT ROWID;

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

INSERT INTO ledger_accounts (account_number, deposits_until)
    SELECT account_number, (MAX(confirmed_at) / 3600000000 + 1) * 3600000000
    FROM ledger_deposits GROUP BY account_number;
