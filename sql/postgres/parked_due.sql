SELECT run_id
FROM jobs
WHERE state = 'parked' AND due_at <= $1
ORDER BY due_at
LIMIT $2
FOR UPDATE SKIP LOCKED;
