-- Serialises admission to one concurrency lane (function + key) across nodes.
SELECT pg_advisory_xact_lock(hashtextextended($1, 0));
