-- Running sums: each deposit row carries the sum of its account's deposits up to and including
-- itself, in (confirmed_at, transfer_id) order. The deposits of an account confirmed after a
-- snapshot's as_of are then the latest running sum minus the running sum of the last deposit
-- confirmed at or before as_of: two index searches, whatever the number of deposits.
--
-- A trigger keeps it, as on PostgreSQL. SQLite's single writer serialises deposits. A deposit
-- confirmed before others already stored (a late redelivery) adds its amount to theirs. The
-- application refuses a deposit that would take the account's running sum past 64 bits
-- before it inserts (SQLite would turn the sum into a float).
ALTER TABLE ledger_deposits ADD COLUMN running BIGINT NOT NULL DEFAULT 0;

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

UPDATE ledger_deposits SET running = w.running
    FROM (SELECT transfer_id,
                 SUM(amount) OVER (PARTITION BY account_number
                                   ORDER BY confirmed_at, transfer_id) AS running
          FROM ledger_deposits) AS w
    WHERE ledger_deposits.transfer_id = w.transfer_id;

-- The two searches of the overlay, index-only. Replaces the index the sums used to scan.
CREATE INDEX ledger_deposits_running ON ledger_deposits (account_number, confirmed_at, transfer_id, running);
DROP INDEX ledger_deposits_by_account;
