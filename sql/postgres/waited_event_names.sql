-- Which of several events (a JSON array of {env_id, name}) some run waits for: only those are
-- matched against the waits.
SELECT DISTINCT w.env_id, w.event_name
FROM waits w
JOIN jsonb_to_recordset($1::jsonb) AS x(env_id TEXT, name TEXT)
  ON w.env_id = x.env_id AND w.event_name = x.name;
