SELECT r.seq, r.id, r.env_id, r.function_id, r.function_version, r.event_id, e.name AS event_name,
       r.status, r.input, r.output, r.error, r.attempt, r.max_attempts, r.parent_run_id,
       r.cancellation_cause, r.created_at, r.updated_at, r.started_at, r.ended_at,
       r.pause_requested, r.pause_reason, r.resume_from_step
FROM runs r
LEFT JOIN events e ON e.id = r.event_id
WHERE r.env_id = $1 AND r.id = $2;
