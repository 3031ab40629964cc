-- A stream opens at the cursor: what it delivered so far is reset, with the redelivery count and status decided.
UPDATE projections SET delivered_seq = cursor_seq, redeliveries = ?3, status = ?4, error_message = ?5, updated_at = ?6
WHERE env_id = ?1 AND name = ?2;
