DELETE FROM audit_log
WHERE seq IN (
    SELECT a.seq FROM audit_log a
    JOIN audit_settings s ON s.org_id = a.org_id
    WHERE s.retention_days IS NOT NULL
      AND a.at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || s.retention_days || ' days')
    LIMIT 10000);
