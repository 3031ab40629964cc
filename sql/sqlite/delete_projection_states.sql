-- Removes every saved state of a projection.
DELETE FROM projection_states WHERE env_id = ?1 AND name = ?2;
