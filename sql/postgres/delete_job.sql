DELETE FROM jobs WHERE run_id = $1;
