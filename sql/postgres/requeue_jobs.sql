-- Jobs claimable again from their due instant, leases dropped (a JSON array of
-- {run_id, due_at}).
UPDATE jobs j
SET state = 'queued', due_at = x.due_at, lease_token = NULL, worker_id = NULL, lease_expires_at = NULL
FROM jsonb_to_recordset($1::jsonb) AS x(run_id TEXT, due_at TIMESTAMPTZ)
WHERE j.run_id = x.run_id;
