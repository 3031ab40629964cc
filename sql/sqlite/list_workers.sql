SELECT id, hostname, function_ids, max_concurrent, labels, version, registered_at, last_heartbeat_at
FROM workers WHERE env_id = ?1 ORDER BY id;
