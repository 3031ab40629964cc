-- A heartbeat renews its jobs' leases, returning the ones it renewed.
UPDATE jobs SET lease_expires_at = ?4
WHERE env_id = ?1 AND worker_id = ?2 AND state = 'leased'
  AND dispatch_id IN (SELECT value FROM json_each(?3))
RETURNING dispatch_id;
