-- Which function's runs started which function's runs (invoke / invoke_async), among the
-- environment's newest 200000 runs (a bounded backward scan of runs_env_seq).
SELECT DISTINCT p.function_id AS parent_function_id, c.function_id AS child_function_id
FROM (SELECT function_id, parent_run_id FROM runs WHERE env_id = $1 ORDER BY seq DESC LIMIT 200000) c
JOIN runs p ON p.id = c.parent_run_id
WHERE c.parent_run_id IS NOT NULL
ORDER BY p.function_id, c.function_id;
