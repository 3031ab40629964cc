DELETE FROM kv_buckets WHERE env_id = $1 AND name = $2;
