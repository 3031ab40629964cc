-- The triggering events of several runs (a JSON array of run ids), with the run each started.
SELECT r.id AS run_id, e.seq, e.id, e.env_id, e.name, e.data, e.metadata, e.source, e.idempotency_key,
       e.version, e.received_at
FROM events e JOIN runs r ON r.event_id = e.id
WHERE r.id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));
