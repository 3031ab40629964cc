SELECT id, env_id, name, event_prefix, verify_header, verify_algorithm, verify_config, metadata,
       schema_version, secret_sealed, prev_secret_sealed, prev_expires_at, ingest_token_prefix,
       created_at, updated_at
FROM webhook_sources WHERE env_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3;
