-- PostgreSQL only (its loading partitions get their primary key from the start); SQLite loads
-- into the indexed table already.
SELECT 1;
