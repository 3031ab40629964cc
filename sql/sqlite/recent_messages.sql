SELECT env_id, id, seq, topic, data, published_at FROM messages
WHERE env_id = ?1 AND (?2 IS NULL OR seq > ?2)
ORDER BY seq DESC
LIMIT ?3;
