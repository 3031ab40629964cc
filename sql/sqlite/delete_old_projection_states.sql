-- Drops the states of generations before the projection's current one.
DELETE FROM projection_states
WHERE env_id = ?1 AND name = ?2
  AND generation < (SELECT generation FROM projections WHERE env_id = ?1 AND name = ?2);
