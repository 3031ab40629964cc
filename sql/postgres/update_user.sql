UPDATE users SET email = $3, name = $4, roles = $5, updated_at = $6 WHERE org_id = $1 AND id = $2;
