-- Several runs of one environment by id (a JSON array), as get_run reads one, each with its
-- triggering event (the ev_ columns; NULL for a run started by an invoke).
SELECT r.seq, r.id, r.env_id, r.function_id, r.function_version, r.event_id, e.name AS event_name,
       r.status, r.input, r.output, r.error, r.attempt, r.max_attempts, r.parent_run_id,
       r.cancellation_cause, r.created_at, r.updated_at, r.started_at, r.ended_at,
       r.pause_requested, r.pause_reason, r.resume_from_step,
       e.seq AS ev_seq, e.data AS ev_data, e.metadata AS ev_metadata, e.source AS ev_source,
       e.idempotency_key AS ev_idempotency_key, e.version AS ev_version,
       e.received_at AS ev_received_at, e.traceparent AS ev_traceparent
FROM runs r
LEFT JOIN events e ON e.id = r.event_id
-- The environment as a filter only (IS NOT DISTINCT FROM is never an index condition): on a table
-- whose statistics are stale the planner would otherwise walk the environment's index.
WHERE r.id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))
  AND r.env_id IS NOT DISTINCT FROM $1;
