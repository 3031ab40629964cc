DELETE FROM kv_entries WHERE env_id = ?1 AND bucket = ?2 AND key = ?3;
