SELECT run_id FROM jobs WHERE timeout_at <= $1 ORDER BY timeout_at LIMIT $2;
