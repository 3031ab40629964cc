-- A stream's head, locked until the transaction ends.
SELECT entity_type, version, deleted FROM streams WHERE env_id = $1 AND entity_id = $2 FOR UPDATE;
