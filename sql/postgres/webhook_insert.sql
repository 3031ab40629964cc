INSERT INTO webhook_sources (id, env_id, name, event_prefix, verify_header, verify_algorithm,
                             verify_config, metadata, schema_version, secret_sealed,
                             prev_secret_sealed, prev_expires_at, ingest_token_hash,
                             ingest_token_prefix, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, $11, $12, $13, $13);
