SELECT count(*) FROM group_deliveries WHERE group_id = ?1 AND state = 'dead';
