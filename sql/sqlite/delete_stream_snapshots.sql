-- A stream's snapshots; with ?3, only those at or after that version (derived from it).
DELETE FROM stream_snapshots
WHERE env_id = ?1 AND entity_id = ?2 AND (?3 IS NULL OR entity_version >= ?3);
