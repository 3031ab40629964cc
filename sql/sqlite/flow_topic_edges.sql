-- Which function's runs published to which topic (X-Ironflow-Run-ID on Publish).
SELECT DISTINCT r.function_id, m.topic
FROM messages m
JOIN runs r ON r.id = m.published_by_run AND r.env_id = m.env_id
WHERE m.env_id = ?1 AND m.published_by_run IS NOT NULL
ORDER BY r.function_id, m.topic;
