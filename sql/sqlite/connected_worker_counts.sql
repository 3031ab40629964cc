-- Workers heard from since ?1, per environment.
SELECT env_id, COUNT(*) AS count FROM workers WHERE last_heartbeat_at >= ?1 GROUP BY env_id ORDER BY env_id;
