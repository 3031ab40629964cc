SELECT b.name, b.description, b.ttl_seconds, b.max_value_size, b.max_bytes, b.history, b.created_at,
       (SELECT COUNT(*) FROM kv_entries e WHERE e.env_id = b.env_id AND e.bucket = b.name AND e.operation = 'put') AS values_count,
       (SELECT COALESCE(SUM(OCTET_LENGTH(e.value)), 0) FROM kv_entries e WHERE e.env_id = b.env_id AND e.bucket = b.name) AS bytes
FROM kv_buckets b
WHERE b.env_id = $1 AND ($2::text IS NULL OR b.name = $2)
ORDER BY b.name;
