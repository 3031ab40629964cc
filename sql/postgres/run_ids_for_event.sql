SELECT id FROM runs WHERE env_id = $1 AND event_id = $2 ORDER BY seq;
