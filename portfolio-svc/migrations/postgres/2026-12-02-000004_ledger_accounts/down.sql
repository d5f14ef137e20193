DROP TRIGGER ledger_accounts_until ON ledger_deposits;
DROP FUNCTION ledger_accounts_until();
DROP TABLE ledger_accounts;
