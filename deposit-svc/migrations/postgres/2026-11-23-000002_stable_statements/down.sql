DROP INDEX deposits_by_status;
CREATE INDEX deposits_pending ON deposits (expires_at) WHERE status = 'pending';
DROP INDEX deposits_by_request;
CREATE UNIQUE INDEX deposits_by_request ON deposits (owner, request_id) WHERE request_id IS NOT NULL;
CREATE UNIQUE INDEX directories_one_current ON directories (state) WHERE state = 'current';
DROP TABLE current_directory;
