DELETE FROM event_schemas WHERE env_id = $1 AND event_name = $2 AND version = $3;
