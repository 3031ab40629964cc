INSERT INTO audit_log (id, at, org_id, project_id, env_id, actor_kind, actor_id, event_type,
                       action, resource, outcome, reason, status, method, path, rpc,
                       function_id, run_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18);
