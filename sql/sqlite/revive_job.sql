-- A failed run's job again (its execution_seq starts over; the lease token and dispatch id of
-- every claim are new, so no old fence can match).
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key,
                  concurrency_limit, created_at)
SELECT r.seq, r.id, r.env_id, r.function_id, ?2, ?3, ?4, ?5, ?3
FROM runs r
WHERE r.id = ?1;
