-- Records the lease a runner now holds (or none, with NULL token and expiry).
UPDATE projections SET lease_token = $3, lease_epoch = $4, lease_expires_at = $5, updated_at = $6
WHERE env_id = $1 AND name = $2;
