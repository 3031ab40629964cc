-- A function's pending debounce for a key, locked, to be re-armed by an event.
SELECT event_id, events, armed_at, fires_at FROM debounce_entries
WHERE env_id = $1 AND function_id = $2 AND debounce_key = $3
FOR UPDATE;
