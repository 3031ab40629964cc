UPDATE users SET password_hash = ?3, updated_at = ?4 WHERE org_id = ?1 AND id = ?2;
