-- PostgreSQL only (its loading partitions get their indexes from the start); SQLite loads into
-- the indexed tables already.
SELECT 1;
