-- Returns no row when the bucket exists.
INSERT INTO kv_buckets (env_id, name, description, ttl_seconds, max_value_size, max_bytes, history, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (env_id, name) DO NOTHING
RETURNING name;
