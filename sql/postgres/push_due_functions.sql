-- Push functions with claimable work (due queued jobs), with their definitions. (Expired
-- leases are first turned into failed attempts by the timer, which queues them again.)
SELECT f.env_id, f.id, f.definition
FROM functions f
WHERE COALESCE(f.definition->>'mode', 'pull') = 'push'
  AND EXISTS (
    SELECT 1 FROM jobs j
    WHERE j.env_id = f.env_id AND j.function_id = f.id
      AND j.state = 'queued' AND j.due_at <= $1
  )
ORDER BY f.env_id, f.id
LIMIT $2;
