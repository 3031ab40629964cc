SELECT COUNT(*) FROM webhook_deliveries
WHERE env_id = $1 AND source_id = $2 AND ($3::text IS NULL OR status = $3);
