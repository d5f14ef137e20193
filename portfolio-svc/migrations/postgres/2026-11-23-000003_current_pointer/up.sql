-- Which snapshot is current is one row, not a partial index on `state`: the same schema as on
-- SQLite (where a partial index matched against a bound value made every read statement be
-- prepared again), and "at most one current snapshot" is structural through the primary key.
CREATE TABLE current_snapshot (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    snapshot_id BIGINT NOT NULL
);
INSERT INTO current_snapshot (singleton, snapshot_id)
    SELECT 1, id FROM snapshots WHERE state = 'current';
DROP INDEX snapshots_one_current;
