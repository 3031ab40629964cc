-- Which events entity streams of each type hold, among the environment's newest 200000 events.
SELECT DISTINCT e.entity_type, e.name AS event
FROM (SELECT entity_type, name FROM events WHERE env_id = ?1 ORDER BY seq DESC LIMIT 200000) e
WHERE e.entity_type IS NOT NULL
ORDER BY e.entity_type, e.name;
