-- `ironflow bench --backlog`: fresh planner statistics after seeding, and the seed's WAL folded
-- into the database file (a deployment's steady state has no half-gigabyte WAL to checkpoint).
ANALYZE;
PRAGMA wal_checkpoint(TRUNCATE);
