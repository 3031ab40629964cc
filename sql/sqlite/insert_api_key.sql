INSERT INTO api_keys (id, org_id, project_id, env_id, name, key_prefix, key_hash, roles,
                      created_at, expires_at, created_by)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11);
