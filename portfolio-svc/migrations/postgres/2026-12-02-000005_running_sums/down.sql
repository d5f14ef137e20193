DROP TRIGGER current_snapshot_notify ON current_snapshot;
DROP FUNCTION current_snapshot_notify();
CREATE INDEX ledger_deposits_by_account ON ledger_deposits (account_number, confirmed_at) INCLUDE (amount);
DROP INDEX ledger_deposits_running;
DROP TRIGGER ledger_deposits_later ON ledger_deposits;
DROP TRIGGER ledger_deposits_running ON ledger_deposits;
DROP FUNCTION ledger_deposits_later();
DROP FUNCTION ledger_deposits_running();
ALTER TABLE ledger_deposits DROP COLUMN running;
