-- Which snapshot is current is one row, not a partial index on `state`. SQLite re-prepares a
-- statement on every call when a bound value decides whether a partial index applies, which
-- made every read statement pay for a full prepare; the pointer row keeps reads on stable,
-- cached statements, and its primary key keeps "at most one current snapshot" structural.
CREATE TABLE current_snapshot (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    snapshot_id BIGINT NOT NULL
);
INSERT INTO current_snapshot (singleton, snapshot_id)
    SELECT 1, id FROM snapshots WHERE state = 'current';
DROP INDEX snapshots_one_current;
