UPDATE consumer_groups
SET pattern = ?3, filter_expr = ?4, ack_mode = ?5, max_inflight = ?6, max_redeliveries = ?7,
    redeliver_delay_ms = ?8, metadata = ?9, status = ?10, updated_at = ?11
WHERE env_id = ?1 AND name = ?2;
