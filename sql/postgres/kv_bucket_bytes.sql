SELECT COALESCE(SUM(OCTET_LENGTH(value)), 0) FROM kv_entries WHERE env_id = $1 AND bucket = $2;
