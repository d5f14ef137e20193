CREATE INDEX ledger_deposits_by_account ON ledger_deposits (account_number, confirmed_at, amount);
DROP INDEX ledger_deposits_running;
DROP TRIGGER ledger_deposits_running;
ALTER TABLE ledger_deposits DROP COLUMN running;
