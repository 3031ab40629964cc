INSERT INTO policy_sets (scope, version, mode, modules, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6);
