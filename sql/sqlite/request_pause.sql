UPDATE runs
SET pause_requested = ?2, pause_reason = CASE WHEN ?2 THEN 'injection' ELSE NULL END, updated_at = ?3
WHERE id = ?1;
