-- The SQL projections the server applies itself, in every environment: the active ones, and any
-- with a rebuild running.
SELECT env_id, name, kind, definition, revision, status, error_message, cursor_seq, cursor_event_id, cursor_event_at, redeliveries, delivered_seq, lease_token, lease_epoch, lease_expires_at, generation, rebuild, created_at, updated_at
FROM projections
WHERE kind = 'sql' AND (status = 'active' OR rebuild IS NOT NULL)
ORDER BY env_id, name;
