-- A deleted source's delivery log goes with it.
DELETE FROM webhook_deliveries WHERE env_id = $1 AND source_id = $2;
