-- A projection's rebuild job (JSON), or none.
UPDATE projections SET rebuild = ?3, updated_at = ?4 WHERE env_id = ?1 AND name = ?2;
