-- The bucket's newest revision (what a watch starts after); no row when it does not exist.
SELECT revision FROM kv_buckets WHERE env_id = ?1 AND name = ?2;
