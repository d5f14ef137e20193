DROP TRIGGER ledger_accounts_until;
DROP TABLE ledger_accounts;
