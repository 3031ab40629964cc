-- Returns no row when the idempotency key was seen before.
INSERT INTO messages (id, env_id, topic, data, idempotency_key, published_at, published_by_run)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (env_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq;
