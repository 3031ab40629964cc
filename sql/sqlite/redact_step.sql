UPDATE steps SET output = ?3, error = ?4, original_output = ?5, updated_at = ?6
WHERE run_id = ?1 AND step_id = ?2;
