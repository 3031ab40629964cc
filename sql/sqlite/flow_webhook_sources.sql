-- Webhook sources with their deliveries counted by status and the newest delivery.
SELECT s.id, s.name, s.event_prefix, CASE WHEN s.verify_config IS NOT NULL THEN 'configured' ELSE 'legacy' END AS source_type,
       COUNT(d.id) FILTER (WHERE d.status IN ('accepted', 'duplicate')) AS accepted,
       COUNT(d.id) FILTER (WHERE d.status = 'failed') AS failed,
       COUNT(d.id) FILTER (WHERE d.status NOT IN ('accepted', 'duplicate', 'failed')) AS rejected,
       MAX(d.created_at) AS latest_delivery_at,
       (SELECT l.status FROM webhook_deliveries l WHERE l.env_id = s.env_id AND l.source_id = s.id
        ORDER BY l.created_at DESC LIMIT 1) AS latest_delivery_status
FROM webhook_sources s
LEFT JOIN webhook_deliveries d ON d.env_id = s.env_id AND d.source_id = s.id
WHERE s.env_id = ?1
GROUP BY s.id, s.env_id, s.name, s.event_prefix, s.verify_config
ORDER BY s.name, s.id;
