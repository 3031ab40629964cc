-- Creates a consumer group; nothing when the name is taken in this environment.
INSERT INTO consumer_groups (id, env_id, name, pattern, filter_expr, ack_mode, max_inflight,
    max_redeliveries, redeliver_delay_ms, metadata, status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $11)
ON CONFLICT (env_id, name) DO NOTHING
RETURNING id;
