SELECT
    (SELECT COUNT(*) FROM api_keys WHERE org_id = ?1 AND revoked_at IS NULL
        AND (roles LIKE '%"' || ?2 || '"%' OR roles LIKE '%"' || ?3 || '"%'))
  + (SELECT COUNT(*) FROM users WHERE org_id = ?1
        AND (roles LIKE '%"' || ?2 || '"%' OR roles LIKE '%"' || ?3 || '"%'));
