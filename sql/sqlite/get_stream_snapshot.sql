-- The newest snapshot at or before version ?3 (NULL: the newest).
SELECT id, entity_id, entity_type, entity_version, state, created_at
FROM stream_snapshots
WHERE env_id = ?1 AND entity_id = ?2 AND (?3 IS NULL OR entity_version <= ?3)
ORDER BY entity_version DESC, created_at DESC
LIMIT 1;
