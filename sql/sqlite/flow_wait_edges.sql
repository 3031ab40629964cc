-- Which function's runs waited for which event, among the environment's newest 200000 history
-- entries (a bounded backward scan of history_env_seq): the map shows what runs do now.
SELECT DISTINCT r.function_id, json_extract(h.payload, '$.event') AS event_name
FROM (SELECT run_id, kind, payload FROM history WHERE env_id = ?1 ORDER BY seq DESC LIMIT 200000) h
JOIN runs r ON r.id = h.run_id
WHERE h.kind = 'run.yielded' AND json_extract(h.payload, '$.type') = 'wait_for_event' AND json_extract(h.payload, '$.event') IS NOT NULL
ORDER BY r.function_id, event_name;
