UPDATE runs
SET status = $2, output = $3, error = $4, ended_at = $5, updated_at = $5
WHERE id = $1;
