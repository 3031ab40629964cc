SELECT min(due_at) FROM group_deliveries
WHERE group_id = $1 AND state IN ('pending', 'inflight');
