-- Arms or re-arms a key's debounce with the latest event. A row another transaction made
-- meanwhile keeps its first arming instant.
INSERT INTO debounce_entries (env_id, function_id, debounce_key, function_version, period_ms,
                              event_id, events, armed_at, fires_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (env_id, function_id, debounce_key) DO UPDATE SET
    function_version = excluded.function_version, period_ms = excluded.period_ms,
    event_id = excluded.event_id, events = debounce_entries.events + 1,
    armed_at = MIN(debounce_entries.armed_at, excluded.armed_at), fires_at = excluded.fires_at;
