SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error FROM events WHERE seq = ?1;
