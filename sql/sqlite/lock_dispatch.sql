SELECT run_id, state, execution_seq, lease_token, worker_id, env_id
FROM jobs
WHERE dispatch_id = ?1;
