-- Newest first; keyset on seq. $4 is a JSON array of statuses.
SELECT r.seq, r.id, r.env_id, r.function_id, r.function_version, r.event_id, e.name AS event_name,
       r.status, r.input, r.output, r.error, r.attempt, r.max_attempts, r.parent_run_id,
       r.cancellation_cause, r.created_at, r.updated_at, r.started_at, r.ended_at,
       r.pause_requested, r.pause_reason, r.resume_from_step
FROM runs r
LEFT JOIN events e ON e.id = r.event_id
WHERE r.env_id = $1
  AND ($2::bigint IS NULL OR r.seq < $2)
  AND ($3::text IS NULL OR r.function_id = $3)
  AND ($4::jsonb IS NULL OR r.status IN (SELECT jsonb_array_elements_text($4::jsonb)))
  AND ($5::text IS NULL OR r.event_id = $5)
  AND ($6::timestamptz IS NULL OR r.created_at >= $6)
  AND ($7::timestamptz IS NULL OR r.created_at < $7)
ORDER BY r.seq DESC
LIMIT $8;
