ALTER TABLE ledger_accounts DROP COLUMN held;
DROP TABLE ledger_holds;
-- Taken withdrawals go, and the running sums are those of the deposits alone again.
DELETE FROM ledger_deposits WHERE amount < 0;
UPDATE ledger_deposits SET running = w.running
    FROM (SELECT transfer_id,
                 SUM(amount) OVER (PARTITION BY account_number
                                   ORDER BY confirmed_at, transfer_id) AS running
          FROM ledger_deposits) AS w
    WHERE ledger_deposits.transfer_id = w.transfer_id;
