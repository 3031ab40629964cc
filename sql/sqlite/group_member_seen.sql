INSERT INTO group_members (group_id, consumer_id, seen_at) VALUES (?1, ?2, ?3)
ON CONFLICT (group_id, consumer_id) DO UPDATE SET seen_at = excluded.seen_at;
