ALTER TABLE instruments_loading DROP CONSTRAINT instruments_loading_pkey;
ALTER TABLE accounts_loading DROP CONSTRAINT accounts_loading_pkey;
DROP INDEX accounts_loading_by_owner;
ALTER TABLE holdings_loading DROP CONSTRAINT holdings_loading_pkey;
