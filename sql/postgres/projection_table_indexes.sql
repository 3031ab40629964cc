-- The indexes of a projection table (renamed after a rebuild's swap, so the next shadow can
-- take the names again).
SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2;
