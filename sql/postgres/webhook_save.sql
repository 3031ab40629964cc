-- A source's changed fields, only if nobody changed it since it was read ($14: its updated_at then).
UPDATE webhook_sources SET name = $3, verify_header = $4, verify_algorithm = $5, verify_config = $6,
       metadata = $7, schema_version = $8, secret_sealed = $9, prev_secret_sealed = $10,
       prev_expires_at = $11, ingest_token_hash = COALESCE($12, ingest_token_hash),
       ingest_token_prefix = COALESCE($13, ingest_token_prefix), updated_at = $15
WHERE env_id = $1 AND id = $2 AND updated_at = $14;
