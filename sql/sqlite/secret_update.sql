UPDATE secrets
SET ciphertext = COALESCE(?3, ciphertext), nonce = COALESCE(?4, nonce), key_id = COALESCE(?5, key_id),
    description = COALESCE(?6, description), revision = revision + 1, updated_at = ?7
WHERE env_id = ?1 AND name = ?2;
