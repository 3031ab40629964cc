-- SQLite's history is one table: nothing to create.
SELECT $1, $2, $3 WHERE 0;
