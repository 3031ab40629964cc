-- Serialises writers of one config document, including its first creation.
SELECT pg_advisory_xact_lock(hashtextextended($1, 0));
