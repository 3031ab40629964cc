SELECT id FROM runs
WHERE env_id = $1 AND status IN ('completed', 'failed', 'cancelled') AND ended_at < $2
ORDER BY ended_at LIMIT $3;
