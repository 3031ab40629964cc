SELECT pg_advisory_xact_lock(hashtextextended('ironflow.policy_set:' || $1::text, 0));
