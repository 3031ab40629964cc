SELECT env_id, function_id, status, attempt, max_attempts, parent_run_id, parent_step_id, input FROM runs WHERE id = ?1;
