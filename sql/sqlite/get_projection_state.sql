-- A partition's saved state in a generation.
SELECT partition_key, state, last_event_seq, last_event_id, last_event_at, updated_at
FROM projection_states
WHERE env_id = ?1 AND name = ?2 AND generation = ?3 AND partition_key = ?4;
