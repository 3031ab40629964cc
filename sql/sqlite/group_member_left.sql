DELETE FROM group_members WHERE group_id = ?1 AND consumer_id = ?2;
