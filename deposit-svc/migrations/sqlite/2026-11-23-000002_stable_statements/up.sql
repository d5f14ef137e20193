-- No partial indexes that a bound value decides on: SQLite prepares such a statement again on
-- every call. The current directory becomes a pointer row (its primary key keeps it unique),
-- and the other partial indexes become plain ones (NULL request ids never collide in a
-- unique index on either database).
CREATE TABLE current_directory (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    directory_id BIGINT NOT NULL
);
INSERT INTO current_directory (singleton, directory_id)
    SELECT 1, id FROM directories WHERE state = 'current';
DROP INDEX directories_one_current;

DROP INDEX deposits_by_request;
CREATE UNIQUE INDEX deposits_by_request ON deposits (owner, request_id);
DROP INDEX deposits_pending;
CREATE INDEX deposits_by_status ON deposits (status, expires_at);
