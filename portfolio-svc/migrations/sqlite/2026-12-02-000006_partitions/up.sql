-- PostgreSQL puts each snapshot's rows in partitions of their own (see its migration of the
-- same name). SQLite has no partitions: a snapshot is pruned in batches with pauses
-- (runtime/src/staged.rs), and the tables stay as they are.
SELECT 1;
