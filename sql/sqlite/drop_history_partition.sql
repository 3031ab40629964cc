-- SQLite's history is one table: nothing to drop.
SELECT $1 WHERE 0;
