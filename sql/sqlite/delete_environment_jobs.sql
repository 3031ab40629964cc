DELETE FROM jobs WHERE env_id IN (SELECT value FROM json_each(?1));
