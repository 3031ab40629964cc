-- Which events each webhook source's deliveries emitted.
SELECT DISTINCT d.source_id, e.name AS event
FROM webhook_deliveries d
JOIN events e ON e.id = d.event_id
WHERE d.env_id = ?1 AND d.event_id IS NOT NULL
ORDER BY d.source_id, e.name;
