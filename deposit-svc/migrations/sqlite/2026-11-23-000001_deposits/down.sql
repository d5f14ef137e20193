DROP TABLE outbox;
DROP TABLE deposits;
DROP TABLE directory_entries;
DROP TABLE directories;
