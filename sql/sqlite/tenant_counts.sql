SELECT o.id, o.name, o.created_at,
       (SELECT COUNT(*) FROM environments e JOIN projects p ON p.id = e.project_id
        WHERE p.org_id = o.id AND e.deleted_at IS NULL AND p.deleted_at IS NULL) AS env_count,
       (SELECT COUNT(*) FROM api_keys k WHERE k.org_id = o.id AND k.revoked_at IS NULL) AS key_count
FROM orgs o WHERE o.deleted_at IS NULL ORDER BY o.created_at, o.id;
