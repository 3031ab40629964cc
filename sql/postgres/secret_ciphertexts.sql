SELECT name, ciphertext, nonce, key_id FROM secrets WHERE env_id = $1 AND name IN (SELECT jsonb_array_elements_text($2::jsonb));
