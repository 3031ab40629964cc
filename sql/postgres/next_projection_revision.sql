-- The next revision number of a name (revisions continue across delete and re-create).
SELECT COALESCE(MAX(revision), 0) + 1
FROM projection_revisions
WHERE env_id = $1 AND name = $2;
