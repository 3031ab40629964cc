SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at FROM events WHERE seq = $1;
