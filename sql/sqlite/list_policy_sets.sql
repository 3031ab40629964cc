SELECT scope, version, mode, modules, created_at, created_by
FROM policy_sets WHERE scope = ?1 ORDER BY version DESC LIMIT 500;
