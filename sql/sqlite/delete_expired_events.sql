-- Events no remaining run refers to; an entity stream's events stay (a stream is its events).
DELETE FROM events WHERE id IN (
    SELECT e.id FROM events e
    WHERE e.env_id = $1 AND e.received_at < $2 AND e.entity_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id)
    LIMIT $3);
