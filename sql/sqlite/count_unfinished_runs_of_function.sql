-- One job row per unfinished run.
SELECT COUNT(*) FROM jobs WHERE env_id = ?1 AND function_id = ?2;
