-- Serialises first boot across nodes sharing one database.
SELECT pg_advisory_xact_lock(7310012);
