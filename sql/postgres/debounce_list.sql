-- An environment's pending debounces, soonest first.
SELECT env_id, function_id, debounce_key, function_version, period_ms, event_id, events,
       armed_at, fires_at
FROM debounce_entries WHERE env_id = $1 ORDER BY fires_at, function_id, debounce_key LIMIT $2;
