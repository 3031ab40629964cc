-- Events a function's runs wrote (a step's emit or append, X-Ironflow-Run-ID), by name, among
-- the environment's newest 200000 events (a bounded backward scan of events_env_seq).
SELECT DISTINCT e.name AS event, r.function_id
FROM (SELECT name, emitted_by_run, env_id FROM events WHERE env_id = $1 ORDER BY seq DESC LIMIT 200000) e
JOIN runs r ON r.id = e.emitted_by_run AND r.env_id = e.env_id
WHERE e.emitted_by_run IS NOT NULL
ORDER BY r.function_id, e.name;
