DROP TRIGGER ledger_accounts_latest;
DROP TABLE ledger_accounts;
