-- Which of several events (a JSON array of {env_id, name}) some run waits for: only those are
-- matched against the waits.
SELECT DISTINCT w.env_id, w.event_name
FROM json_each(?1) x
JOIN waits w
  ON w.env_id = json_extract(x.value, '$.env_id') AND w.event_name = json_extract(x.value, '$.name');
