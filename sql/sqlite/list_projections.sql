-- A page of projections by name (status and kind filters), each row with the count of all that match.
SELECT env_id, name, kind, definition, revision, status, error_message, cursor_seq, cursor_event_id, cursor_event_at, redeliveries, delivered_seq, lease_token, lease_epoch, lease_expires_at, generation, rebuild, created_at, updated_at, count(*) OVER () AS total
FROM projections
WHERE env_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR kind = ?3)
ORDER BY name
LIMIT ?4 OFFSET ?5;
