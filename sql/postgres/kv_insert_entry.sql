INSERT INTO kv_entries (env_id, bucket, key, revision, operation, value, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);
