DELETE FROM debounce_entries WHERE env_id = ?1 AND function_id = ?2 AND debounce_key = ?3;
