UPDATE environments SET retention_days = $2, updated_at = $3 WHERE id = $1;
