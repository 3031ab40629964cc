-- A deleted stream's events below its tombstone (DeleteStream{purge}).
DELETE FROM events WHERE env_id = ?1 AND entity_id = ?2 AND entity_version < ?3;
