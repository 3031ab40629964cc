-- A runner-applied projection starts again (a rebuild): the cursor back, a fresh state
-- generation, the lease fenced (its holder gets ABORTED and reloads), any error cleared.
UPDATE projections
SET cursor_seq = $3, cursor_event_id = NULL, cursor_event_at = NULL, generation = generation + 1,
    lease_token = NULL, lease_expires_at = NULL, lease_epoch = lease_epoch + 1, delivered_seq = $3,
    redeliveries = 0, status = 'active', error_message = '', rebuild = $4, updated_at = $5
WHERE env_id = $1 AND name = $2;
