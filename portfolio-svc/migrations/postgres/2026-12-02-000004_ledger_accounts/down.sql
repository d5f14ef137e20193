DROP TRIGGER ledger_accounts_latest ON ledger_deposits;
DROP FUNCTION ledger_accounts_latest();
DROP TABLE ledger_accounts;
