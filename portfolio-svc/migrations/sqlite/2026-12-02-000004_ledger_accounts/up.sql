-- One row per account that has deposits: when the latest of them was confirmed. A holdings
-- page reads it in the same statement as the page and sums the deposits only when one came
-- after the snapshot's as_of (most reads: none), instead of running the overlay on every call.
-- A trigger keeps it, not the application, so that a replica of the previous version still
-- running during a rolling update keeps it too.
CREATE TABLE ledger_accounts (
    account_number TEXT NOT NULL PRIMARY KEY,
    latest_confirmed_at BIGINT NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER ledger_accounts_latest AFTER INSERT ON ledger_deposits
BEGIN
    INSERT INTO ledger_accounts (account_number, latest_confirmed_at)
        VALUES (NEW.account_number, NEW.confirmed_at)
        ON CONFLICT (account_number) DO UPDATE
            SET latest_confirmed_at = excluded.latest_confirmed_at
            WHERE excluded.latest_confirmed_at > ledger_accounts.latest_confirmed_at;
END;

INSERT INTO ledger_accounts (account_number, latest_confirmed_at)
    SELECT account_number, MAX(confirmed_at) FROM ledger_deposits GROUP BY account_number;
