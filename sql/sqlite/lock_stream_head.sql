-- A stream's head (SQLite's one writer holds it until the transaction ends).
SELECT entity_type, version, deleted FROM streams WHERE env_id = ?1 AND entity_id = ?2;
