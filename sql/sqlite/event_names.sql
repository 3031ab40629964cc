-- Counts per name over the newest ?5 matching events; the third column is how many were scanned.
WITH scanned AS (
    SELECT name
    FROM events
    WHERE env_id = ?1
      AND (?2 IS NULL OR source = ?2)
      AND (?3 IS NULL OR received_at >= ?3)
      AND (?4 IS NULL OR received_at < ?4)
    ORDER BY seq DESC
    LIMIT ?5
)
SELECT name, COUNT(*) AS count, (SELECT COUNT(*) FROM scanned) AS scanned
FROM scanned
GROUP BY name
ORDER BY count DESC, name;
