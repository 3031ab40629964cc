-- A projection's status and error (a resume clears the redelivery count).
UPDATE projections SET status = $3, error_message = $4, redeliveries = 0, updated_at = $5
WHERE env_id = $1 AND name = $2;
