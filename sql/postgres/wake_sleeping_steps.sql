UPDATE steps SET status = 'completed', updated_at = $2
WHERE run_id = $1 AND status = 'sleeping';
