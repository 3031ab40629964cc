SELECT version, definition_hash
FROM functions
WHERE env_id = $1 AND id = $2
FOR UPDATE;
