UPDATE runs
SET status = ?2, output = NULL, error = NULL, ended_at = NULL, resume_from_step = ?3,
    pause_requested = 0, pause_reason = NULL, updated_at = ?4
WHERE id = ?1;
