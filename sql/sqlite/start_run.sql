UPDATE runs
SET status = 'running', started_at = COALESCE(started_at, ?2), updated_at = ?2
WHERE id = ?1;
