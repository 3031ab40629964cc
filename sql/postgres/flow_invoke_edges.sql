-- Which function's runs started which function's runs (invoke / invoke_async).
SELECT DISTINCT p.function_id AS parent_function_id, c.function_id AS child_function_id
FROM runs c
JOIN runs p ON p.id = c.parent_run_id
WHERE c.env_id = $1 AND c.parent_run_id IS NOT NULL
ORDER BY p.function_id, c.function_id;
