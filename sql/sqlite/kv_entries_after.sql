-- A bucket's revisions after a watcher's position, in revision order (tombstones included).
SELECT key, revision, operation, value, created_at, expires_at
FROM kv_entries
WHERE env_id = ?1 AND bucket = ?2 AND revision > ?3
ORDER BY revision
LIMIT ?4;
