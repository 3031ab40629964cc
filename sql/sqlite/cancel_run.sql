UPDATE runs
SET status = 'cancelled', cancellation_cause = ?3, ended_at = ?4, updated_at = ?4
WHERE env_id = ?1 AND id = ?2;
