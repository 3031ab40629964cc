-- Removes a projection (its states go with delete_projection_states).
DELETE FROM projections WHERE env_id = ?1 AND name = ?2;
