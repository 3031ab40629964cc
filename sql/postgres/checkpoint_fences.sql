-- Group commit of step checkpoints: the dispatches (a JSON array of
-- {dispatch_id, execution_seq, lease_token}) whose fence still holds, locked, with their runs.
SELECT j.dispatch_id, j.run_id, r.env_id, r.attempt
FROM jsonb_to_recordset($1::jsonb) AS f(dispatch_id TEXT, execution_seq BIGINT, lease_token TEXT)
JOIN jobs j ON j.dispatch_id = f.dispatch_id AND j.execution_seq = f.execution_seq
           AND j.lease_token = f.lease_token AND j.state = 'leased'
JOIN runs r ON r.id = j.run_id
ORDER BY j.dispatch_id
FOR UPDATE OF j;
