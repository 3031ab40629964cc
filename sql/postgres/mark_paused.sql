UPDATE runs
SET status = 'paused', pause_requested = false, pause_reason = $2, error = COALESCE($3, error),
    updated_at = $4
WHERE id = $1;
