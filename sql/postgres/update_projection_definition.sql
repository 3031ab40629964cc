-- A changed definition, at its next revision (the cursor stays).
UPDATE projections SET definition = $3, revision = $4, updated_at = $5
WHERE env_id = $1 AND name = $2;
