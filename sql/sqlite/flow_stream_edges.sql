-- Which events entity streams of each type hold.
SELECT DISTINCT entity_type, name AS event
FROM events
WHERE env_id = ?1 AND entity_type IS NOT NULL
ORDER BY entity_type, name;
