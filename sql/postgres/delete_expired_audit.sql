DELETE FROM audit_log a
USING audit_settings s
WHERE a.org_id = s.org_id AND s.retention_days IS NOT NULL
  AND a.at < now() - make_interval(days => s.retention_days);
