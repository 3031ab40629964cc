-- History retention: a per-environment setting (NULL: keep everything, the default).

ALTER TABLE environments ADD COLUMN retention_days INTEGER
    CHECK (retention_days IS NULL OR retention_days BETWEEN 1 AND 36500);

-- The history stays append-only: a DELETE only of an entry older than its environment's
-- retention (what the retention pass removes, in batches).
DROP TRIGGER history_no_delete;
CREATE TRIGGER history_no_delete BEFORE DELETE ON history
WHEN NOT EXISTS (
    SELECT 1 FROM environments e
    WHERE e.id = OLD.env_id AND e.retention_days IS NOT NULL
      AND OLD.recorded_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || e.retention_days || ' days'))
BEGIN
    SELECT RAISE(ABORT, 'history is append-only: DELETE is not allowed');
END;
