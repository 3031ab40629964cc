SELECT key, revision, operation, value, created_at, expires_at
FROM kv_entries
WHERE env_id = ?1 AND bucket = ?2 AND key = ?3
ORDER BY revision;
