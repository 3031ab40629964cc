SELECT name, ciphertext, nonce, key_id FROM secrets WHERE env_id = ?1 AND name IN (SELECT value FROM json_each(?2));
