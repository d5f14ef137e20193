-- Back to one table (loads in progress are dropped).
DELETE FROM current_directory WHERE directory_id IN (SELECT id FROM directories WHERE state = 'loading');
DELETE FROM directories WHERE state = 'loading';
DROP TABLE directory_entries_loading;
CREATE TABLE directory_entries_unpartitioned (LIKE directory_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO directory_entries_unpartitioned SELECT * FROM directory_entries;
DROP TABLE directory_entries;
ALTER TABLE directory_entries_unpartitioned RENAME TO directory_entries;
ALTER TABLE directory_entries ADD PRIMARY KEY (directory_id, account_number);
