INSERT INTO workers (env_id, id, hostname, function_ids, max_concurrent, labels, version, registered_at, last_heartbeat_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (env_id, id) DO UPDATE
SET hostname = excluded.hostname, function_ids = excluded.function_ids, max_concurrent = excluded.max_concurrent,
    labels = excluded.labels, version = excluded.version, registered_at = excluded.registered_at,
    last_heartbeat_at = excluded.last_heartbeat_at;
