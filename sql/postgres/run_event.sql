SELECT e.seq, e.id, e.env_id, e.name, e.data, e.metadata, e.source, e.idempotency_key, e.version, e.received_at
FROM events e JOIN runs r ON r.event_id = e.id
WHERE r.id = $1;
