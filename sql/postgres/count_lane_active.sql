SELECT COUNT(*) FROM jobs
WHERE env_id = $1 AND function_id = $2 AND concurrency_key = $3 AND state <> 'blocked'
  AND COALESCE(resume_state, '') <> 'blocked';
