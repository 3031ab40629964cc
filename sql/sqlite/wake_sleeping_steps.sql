-- The sleeping steps of runs dispatched again are over (a JSON array of run ids).
UPDATE steps SET status = 'completed', ended_at = ?2, updated_at = ?2
WHERE run_id IN (SELECT value FROM json_each(?1)) AND status = 'sleeping';
