-- PostgreSQL puts each directory's entries in a partition of its own (see its migration of
-- the same name). SQLite has no partitions: a directory is pruned in batches with pauses
-- (runtime/src/staged.rs), and the table stays as it is.
SELECT 1;
