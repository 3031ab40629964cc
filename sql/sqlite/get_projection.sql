-- One projection with its cursor and lease.
SELECT env_id, name, kind, definition, revision, status, error_message, cursor_seq, cursor_event_id, cursor_event_at, redeliveries, delivered_seq, lease_token, lease_epoch, lease_expires_at, generation, rebuild, created_at, updated_at
FROM projections
WHERE env_id = ?1 AND name = ?2;
