-- One NOTIFY per transaction (delivered at commit): wakes waiting dispatchers on every node.
SELECT pg_notify('ironflow_jobs', '');
