-- An environment's topics with their message counts and first / last publish instants.
SELECT topic, COUNT(*) AS message_count, MIN(published_at) AS first_at, MAX(published_at) AS last_at
FROM messages WHERE env_id = ?1
GROUP BY topic ORDER BY topic LIMIT ?2;
