-- Jobs claimable again from their due instant, leases dropped (a JSON array of
-- {run_id, due_at}).
-- The id list again as an index condition: the planner's guess for a JSON recordset is 100 rows,
-- which makes a hash join over the whole table look cheaper than index lookups.
UPDATE jobs j
SET state = 'queued', due_at = x.due_at, lease_token = NULL, worker_id = NULL, lease_expires_at = NULL
FROM jsonb_to_recordset($1::jsonb) AS x(run_id TEXT, due_at TIMESTAMPTZ)
WHERE j.run_id = x.run_id
  AND j.run_id = ANY(ARRAY(SELECT y->>'run_id' FROM jsonb_array_elements($1::jsonb) y));
