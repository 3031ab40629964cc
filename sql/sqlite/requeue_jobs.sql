-- Jobs claimable again from their due instant, leases dropped (a JSON array of
-- {run_id, due_at}).
UPDATE jobs
SET state = 'queued', due_at = json_extract(x.value, '$.due_at'), lease_token = NULL, worker_id = NULL,
    lease_expires_at = NULL
FROM json_each(?1) AS x
WHERE jobs.run_id = json_extract(x.value, '$.run_id');
