-- A paused job goes back where it was; when its steps were reset, a park is over (the step it
-- waited in is gone) and it is due now.
UPDATE jobs
SET state = CASE WHEN ?2 AND resume_state = 'parked' THEN 'queued' ELSE resume_state END,
    due_at = CASE WHEN ?2 THEN ?3 ELSE due_at END,
    resume_state = NULL
WHERE run_id = ?1 AND state = 'paused';
