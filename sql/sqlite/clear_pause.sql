-- The run's status follows its job again after a pause.
UPDATE runs
SET status = CASE (SELECT j.state FROM jobs j WHERE j.run_id = ?1)
                 WHEN 'parked' THEN 'waiting'
                 WHEN 'blocked' THEN 'waiting_for_capacity'
                 ELSE 'running' END,
    pause_requested = 0, pause_reason = NULL, resume_from_step = ?2, updated_at = ?3
WHERE id = ?1;
