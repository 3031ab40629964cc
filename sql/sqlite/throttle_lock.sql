-- A throttle key's window (the single writer serialises emits).
SELECT starts FROM throttle_windows
WHERE env_id = ?1 AND function_id = ?2 AND throttle_key = ?3;
