-- Group commit of step checkpoints: the dispatches (a JSON array of
-- {dispatch_id, execution_seq, lease_token, env_id, worker_id}) whose fence still holds, locked, with their runs
-- and current lease. The ANY(ARRAY(...)) finds the rows through the dispatch_id index: a join
-- on the JSON records made Postgres read every leased row, dead versions included.
SELECT j.dispatch_id, j.run_id, r.env_id, r.attempt, j.lease_expires_at
FROM jobs j
JOIN jsonb_to_recordset($1::jsonb) AS f(dispatch_id TEXT, execution_seq BIGINT, lease_token TEXT, env_id TEXT, worker_id TEXT)
  ON j.dispatch_id = f.dispatch_id AND j.execution_seq = f.execution_seq
 AND j.lease_token = f.lease_token AND j.env_id = f.env_id AND j.worker_id = f.worker_id
JOIN runs r ON r.id = j.run_id
WHERE j.dispatch_id = ANY(ARRAY(SELECT e->>'dispatch_id' FROM jsonb_array_elements($1::jsonb) e))
  AND j.state = 'leased'
ORDER BY j.dispatch_id
FOR UPDATE OF j;
