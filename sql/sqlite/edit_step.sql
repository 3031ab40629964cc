-- A step's output replaced by a person: the first recorded output stays as the original; the
-- step counts as completed, so a resumed handler memoizes the new value.
UPDATE steps
SET original_output = CASE WHEN patched_at IS NULL AND NOT injected THEN output ELSE original_output END,
    output = ?3, status = 'completed', error = NULL,
    injected = injected OR ?4,
    patched_at = CASE WHEN ?4 THEN patched_at ELSE ?6 END,
    patched_by = CASE WHEN ?4 THEN patched_by ELSE ?5 END,
    updated_at = ?6
WHERE run_id = ?1 AND step_id = ?2;
