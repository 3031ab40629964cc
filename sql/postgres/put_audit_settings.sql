INSERT INTO audit_settings (org_id, log_reads, retention_days, updated_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (org_id) DO UPDATE
SET log_reads = excluded.log_reads, retention_days = excluded.retention_days,
    updated_at = excluded.updated_at;
