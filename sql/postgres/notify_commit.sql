-- One NOTIFY per transaction, delivered at commit (see store::notify_payload).
SELECT pg_notify('ironflow', $1);
