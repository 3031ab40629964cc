-- Events a function's runs wrote (a step's append or emit, X-Ironflow-Run-ID), by name.
SELECT DISTINCT e.name AS event, r.function_id
FROM events e
JOIN runs r ON r.id = e.emitted_by_run AND r.env_id = e.env_id
WHERE e.env_id = ?1 AND e.emitted_by_run IS NOT NULL
ORDER BY r.function_id, e.name;
