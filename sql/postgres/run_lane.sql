SELECT env_id, function_id, concurrency_key, concurrency_limit FROM jobs WHERE run_id = $1;
