-- A parked job is claimable now; a paused one that was parked goes back to the queue when it is
-- resumed (what it waited for has happened). Returns the job's new state (no row: not woken).
UPDATE jobs
SET state = CASE WHEN state = 'parked' THEN 'queued' ELSE state END,
    resume_state = CASE WHEN state = 'paused' THEN 'queued' ELSE resume_state END,
    due_at = $2
WHERE run_id = $1 AND (state = 'parked' OR (state = 'paused' AND resume_state = 'parked'))
RETURNING state;
