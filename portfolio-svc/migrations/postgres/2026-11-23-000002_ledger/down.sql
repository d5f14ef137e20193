DROP TABLE ledger_deposits;
