-- A throttle key's window, locked, so concurrent emits of one key take their start instants
-- one after the other.
SELECT starts FROM throttle_windows
WHERE env_id = $1 AND function_id = $2 AND throttle_key = $3
FOR UPDATE;
