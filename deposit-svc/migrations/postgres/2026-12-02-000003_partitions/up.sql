-- Each directory's entries in a partition of their own, so that pruning a directory is a
-- detach and a drop instead of a delete of every row; see runtime/src/staged.rs. A load
-- writes into `directory_entries_v{id}`, a partition of `directory_entries_loading` (same
-- columns, no indexes), which moves to `directory_entries` at the end of the stream.
--
-- This migration copies the directories into their partitions once. A load in progress while
-- it runs is dropped (its loader gets an error and sends the day again).
DELETE FROM current_directory WHERE directory_id IN (SELECT id FROM directories WHERE state = 'loading');
DELETE FROM directories WHERE state = 'loading';

ALTER TABLE directory_entries RENAME TO directory_entries_unpartitioned;
ALTER INDEX directory_entries_pkey RENAME TO directory_entries_unpartitioned_pkey;

CREATE TABLE directory_entries (
    directory_id BIGINT NOT NULL,
    account_number TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    PRIMARY KEY (directory_id, account_number)
) PARTITION BY LIST (directory_id);

CREATE TABLE directory_entries_loading (LIKE directory_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (directory_id);

DO $$
DECLARE
    d BIGINT;
BEGIN
    FOR d IN SELECT id FROM directories ORDER BY id LOOP
        EXECUTE format('CREATE TABLE directory_entries_v%s PARTITION OF directory_entries FOR VALUES IN (%s)', d, d);
    END LOOP;
END
$$;

INSERT INTO directory_entries (directory_id, account_number, customer_name)
    SELECT directory_id, account_number, customer_name FROM directory_entries_unpartitioned
    WHERE directory_id IN (SELECT id FROM directories);

DROP TABLE directory_entries_unpartitioned;
