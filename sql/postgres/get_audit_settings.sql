SELECT org_id, log_reads, retention_days, updated_at FROM audit_settings WHERE org_id = $1;
