-- Several runs of one environment by id (a JSON array), as get_run reads one, each with its
-- triggering event (the ev_ columns; NULL for a run started by an invoke).
-- The unary + keeps env_id out of the index choice: every run of an environment shares it, and
-- SQLite would walk the environment's index instead of probing the primary key.
SELECT r.seq, r.id, r.env_id, r.function_id, r.function_version, r.event_id, e.name AS event_name,
       r.status, r.input, r.output, r.error, r.attempt, r.max_attempts, r.parent_run_id,
       r.cancellation_cause, r.created_at, r.updated_at, r.started_at, r.ended_at,
       r.pause_requested, r.pause_reason, r.resume_from_step,
       e.seq AS ev_seq, e.data AS ev_data, e.metadata AS ev_metadata, e.source AS ev_source,
       e.idempotency_key AS ev_idempotency_key, e.version AS ev_version,
       e.received_at AS ev_received_at, e.traceparent AS ev_traceparent
FROM runs r
LEFT JOIN events e ON e.id = r.event_id
WHERE +r.env_id = ?1 AND r.id IN (SELECT value FROM json_each(?2));
