SELECT env_id, id, topic, data, published_at FROM messages WHERE seq = $1;
