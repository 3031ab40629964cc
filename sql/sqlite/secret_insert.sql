-- Returns no row when the secret exists.
INSERT INTO secrets (env_id, name, description, ciphertext, nonce, key_id, revision, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)
ON CONFLICT (env_id, name) DO NOTHING
RETURNING revision;
