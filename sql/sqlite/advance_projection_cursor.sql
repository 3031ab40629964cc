-- Moves the cursor forward (never back) to the last event applied.
UPDATE projections
SET cursor_seq = ?3, cursor_event_id = ?4, cursor_event_at = ?5, redeliveries = 0, updated_at = ?6
WHERE env_id = ?1 AND name = ?2 AND cursor_seq < ?3;
