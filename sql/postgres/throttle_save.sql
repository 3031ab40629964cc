UPDATE throttle_windows SET starts = $4
WHERE env_id = $1 AND function_id = $2 AND throttle_key = $3;
