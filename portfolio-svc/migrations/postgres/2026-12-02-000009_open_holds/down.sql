DROP INDEX ledger_holds_open;
