-- The waits of runs that ended (a JSON array of run ids).
DELETE FROM waits WHERE run_id IN (SELECT value FROM json_each(?1));
