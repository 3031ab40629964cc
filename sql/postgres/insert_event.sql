-- Returns no row when the idempotency key was seen before.
INSERT INTO events (id, env_id, name, data, metadata, source, idempotency_key, version, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (env_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq;
