-- Jobs whose time came: a parked wait or invoke at its deadline, a run past its timeout, a
-- lease that expired (one writer: no row locks). The caller decides per row.
SELECT run_id, env_id, state, due_at, timeout_at, lease_expires_at
FROM jobs
WHERE (state = 'parked' AND due_at <= ?1)
   OR timeout_at <= ?1
   OR (state = 'leased' AND lease_expires_at <= ?1)
ORDER BY run_id
LIMIT ?2;
