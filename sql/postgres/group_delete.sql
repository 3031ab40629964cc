-- Deliveries and members go with the group (ON DELETE CASCADE).
DELETE FROM consumer_groups WHERE env_id = $1 AND name = $2 RETURNING id;
