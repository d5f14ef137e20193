DROP TABLE holdings;
DROP TABLE accounts;
DROP TABLE instruments;
DROP TABLE snapshots;
