SELECT pg_notify('ironflow_runs', $1);
