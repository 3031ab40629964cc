-- Jobs whose time came: a parked wait or invoke at its deadline, a run past its timeout, a
-- lease that expired. Locked in run order (the order every transaction locks job rows in),
-- skipping rows another transaction holds: the next sweep sees them. The caller decides per
-- row from the values read under the lock.
SELECT j.run_id, j.env_id, j.dispatch_id, j.state, j.execution_seq, j.lease_token, j.worker_id,
       j.lease_expires_at, j.due_at, j.timeout_at, j.function_id, j.concurrency_key, j.concurrency_limit
FROM jobs j
WHERE j.run_id IN (
    SELECT run_id FROM jobs WHERE state = 'parked' AND due_at <= $1
    UNION
    SELECT run_id FROM jobs WHERE timeout_at <= $1
    UNION
    SELECT run_id FROM jobs WHERE state = 'leased' AND lease_expires_at <= $1
)
ORDER BY j.run_id
LIMIT $2
FOR UPDATE OF j SKIP LOCKED;
