-- SQLite renames a table's automatic indexes with it: nothing to rename.
SELECT name AS indexname FROM sqlite_master WHERE 0 AND ?1 IS NOT NULL AND ?2 IS NOT NULL;
