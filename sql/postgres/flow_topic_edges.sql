-- Which function's runs published to which topic (X-Ironflow-Run-ID on Publish), among the
-- environment's newest 200000 messages.
SELECT DISTINCT r.function_id, m.topic
FROM (SELECT topic, published_by_run, env_id FROM messages WHERE env_id = $1 ORDER BY seq DESC LIMIT 200000) m
JOIN runs r ON r.id = m.published_by_run AND r.env_id = m.env_id
WHERE m.published_by_run IS NOT NULL
ORDER BY r.function_id, m.topic;
