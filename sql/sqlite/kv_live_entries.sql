-- The newest revision of every key that holds a live (unexpired) value, in revision order:
-- what a watch sends first.
SELECT e.key, e.revision, e.operation, e.value, e.created_at, e.expires_at
FROM kv_entries e
WHERE e.env_id = ?1 AND e.bucket = ?2
  AND e.revision = (SELECT MAX(r.revision) FROM kv_entries r WHERE r.env_id = e.env_id AND r.bucket = e.bucket AND r.key = e.key)
  AND e.operation = 'put'
  AND (e.expires_at IS NULL OR e.expires_at > ?3)
ORDER BY e.revision;
