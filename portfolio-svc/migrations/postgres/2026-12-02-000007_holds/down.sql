DROP TRIGGER ledger_accounts_held_inserted ON ledger_accounts;
DROP TRIGGER ledger_accounts_held_changed ON ledger_accounts;
DROP FUNCTION ledger_accounts_held_notify();
ALTER TABLE ledger_accounts DROP COLUMN held;
DROP TABLE ledger_holds;
-- Taken withdrawals go, and the running sums are those of the deposits alone again.
DELETE FROM ledger_deposits WHERE amount < 0;
UPDATE ledger_deposits d SET running = w.running
    FROM (SELECT transfer_id,
                 SUM(amount) OVER (PARTITION BY account_number
                                   ORDER BY confirmed_at, transfer_id) AS running
          FROM ledger_deposits) w
    WHERE d.transfer_id = w.transfer_id;
ALTER TABLE ledger_deposits DROP CONSTRAINT ledger_deposits_amount_check;
ALTER TABLE ledger_deposits ADD CONSTRAINT ledger_deposits_amount_check CHECK (amount > 0);
