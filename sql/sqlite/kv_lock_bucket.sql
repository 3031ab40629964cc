-- Takes the bucket's next revision; the row lock orders concurrent writers.
UPDATE kv_buckets SET revision = revision + 1
WHERE env_id = ?1 AND name = ?2
RETURNING revision, max_value_size, ttl_seconds, history, max_bytes;
