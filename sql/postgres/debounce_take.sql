-- Takes a due debounce for its run, only if no event re-armed it since it was read.
DELETE FROM debounce_entries
WHERE env_id = $1 AND function_id = $2 AND debounce_key = $3 AND event_id = $4 AND fires_at <= $5;
