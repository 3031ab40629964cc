UPDATE jobs SET state = 'queued', due_at = MAX(due_at, ?2) WHERE run_id = ?1 AND state = 'blocked';
