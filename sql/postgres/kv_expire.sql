DELETE FROM kv_entries WHERE expires_at IS NOT NULL AND expires_at <= $1;
