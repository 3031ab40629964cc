-- Every step of several runs (a JSON array of run ids), in each run's order: a dispatch hands
-- the completed and failed ones to the worker and counts all of them.
SELECT run_id, step_id, name, step_type, sequence, status, output, error, attempt,
       started_at, ended_at, created_at, updated_at, original_output, patched_at, patched_by, injected
FROM steps
WHERE run_id IN (SELECT value FROM json_each(?1))
ORDER BY run_id, sequence, created_at;
