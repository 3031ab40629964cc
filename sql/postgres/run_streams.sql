-- The streams a run touched: its trigger's and those it appended to (X-Ironflow-Run-ID).
SELECT DISTINCT e.entity_id
FROM events e
WHERE e.env_id = $1 AND e.entity_id IS NOT NULL
  AND (e.emitted_by_run = $2 OR e.id = (SELECT r.event_id FROM runs r WHERE r.id = $2))
ORDER BY e.entity_id;
