SELECT env_id, id, seq, topic, data, published_at FROM messages WHERE seq = ?1;
