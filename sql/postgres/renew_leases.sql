-- A heartbeat renews its jobs' leases (returning the ones it renewed), locking the rows in run order (the order every
-- transaction takes job rows in; an UPDATE alone would lock them in scan order).
UPDATE jobs SET lease_expires_at = $4
WHERE run_id IN (
    SELECT run_id FROM jobs
    WHERE env_id = $1 AND worker_id = $2 AND state = 'leased'
      AND dispatch_id = ANY(ARRAY(SELECT jsonb_array_elements_text($3::jsonb)))
    ORDER BY run_id
    FOR UPDATE
)
RETURNING dispatch_id;
