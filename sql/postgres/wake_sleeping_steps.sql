UPDATE steps SET status = 'completed', ended_at = $2, updated_at = $2
WHERE run_id = $1 AND status = 'sleeping';
