-- Group commit of step checkpoints: the dispatches (a JSON array of
-- {dispatch_id, execution_seq, lease_token, env_id, worker_id}) whose fence still holds, with their runs and
-- current lease.
SELECT j.dispatch_id, j.run_id, r.env_id, r.attempt, j.lease_expires_at
FROM json_each(?1) AS f
JOIN jobs j ON j.dispatch_id = json_extract(f.value, '$.dispatch_id')
           AND j.execution_seq = json_extract(f.value, '$.execution_seq')
           AND j.lease_token = json_extract(f.value, '$.lease_token') AND j.state = 'leased'
           AND j.env_id = json_extract(f.value, '$.env_id')
           AND j.worker_id = json_extract(f.value, '$.worker_id')
JOIN runs r ON r.id = j.run_id
ORDER BY j.dispatch_id;
