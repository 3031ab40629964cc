-- The source an ingest token opens (of a live environment).
SELECT w.id, w.env_id, w.name, w.event_prefix, w.verify_header, w.verify_algorithm,
       w.verify_config, w.metadata, w.schema_version, w.secret_sealed, w.prev_secret_sealed,
       w.prev_expires_at, w.ingest_token_prefix, w.created_at, w.updated_at
FROM webhook_sources w
JOIN environments v ON v.id = w.env_id AND v.deleted_at IS NULL
WHERE w.ingest_token_hash = $1;
