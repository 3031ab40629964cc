-- Saves a partition's state at the last event folded into it (never over a later one).
INSERT INTO projection_states (env_id, name, generation, partition_key, state, last_event_seq, last_event_id, last_event_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (env_id, name, generation, partition_key) DO UPDATE
SET state = excluded.state, last_event_seq = excluded.last_event_seq,
    last_event_id = excluded.last_event_id, last_event_at = excluded.last_event_at,
    updated_at = excluded.updated_at
WHERE projection_states.last_event_seq <= excluded.last_event_seq;
