-- SQLite's one writer commits in order: nothing is ever held back.
SELECT 0 AS held, NULL AS pid, NULL AS since WHERE json_array_length(?2) >= 0 AND ?1 IS NOT NULL AND ?3 IS NOT NULL;
