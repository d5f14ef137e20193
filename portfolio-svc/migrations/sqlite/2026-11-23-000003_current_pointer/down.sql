CREATE UNIQUE INDEX snapshots_one_current ON snapshots (state) WHERE state = 'current';
DROP TABLE current_snapshot;
