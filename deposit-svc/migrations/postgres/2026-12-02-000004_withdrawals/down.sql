DELETE FROM outbox WHERE kind <> 'deposit';
ALTER TABLE outbox DROP COLUMN kind;
DROP TABLE withdrawals;
