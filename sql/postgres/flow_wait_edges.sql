-- Which function's runs waited for which event, from the newest 200000 history entries (a bounded
-- scan of the primary key: the map shows what runs do now, not what they did a year ago).
SELECT DISTINCT r.function_id, h.payload->>'event' AS event_name
FROM history h
JOIN runs r ON r.id = h.run_id
WHERE h.seq > (SELECT COALESCE(MAX(seq), 0) - 200000 FROM history)
  AND h.env_id = $1 AND h.kind = 'run.yielded' AND h.payload->>'type' = 'wait_for_event'
  AND h.run_id IS NOT NULL AND h.payload->>'event' IS NOT NULL
ORDER BY r.function_id, event_name;
