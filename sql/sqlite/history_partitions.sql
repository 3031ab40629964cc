-- SQLite's history is one table: no partitions.
SELECT '' AS name, NULL AS from_at, NULL AS to_at WHERE 0;
