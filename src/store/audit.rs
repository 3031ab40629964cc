//! The audit log in the store: append-only entries of who did what (the database refuses
//! updates, and deletes of entries younger than the org's retention), and per-org settings.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first, filtered; `before_seq` continues a page.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    async fn audit_settings(&self, org: &str) -> Result<Option<AuditSettingsRecord>, StoreError>;
    async fn put_audit_settings(&self, settings: &AuditSettingsRecord) -> Result<(), StoreError>;
    /// Removes entries older than their org's retention; returns how many.
    async fn delete_expired_audit(&self) -> Result<u64, StoreError>;
}

/// One thing that happened, as the audit log keeps it.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: Ts,
    pub org_id: String,
    pub project_id: String,
    pub env_id: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub event_type: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub reason: String,
    pub status: i32,
    pub method: String,
    pub path: String,
    pub rpc: String,
    pub function_id: String,
    pub run_id: String,
}

impl Default for AuditEntry {
    fn default() -> Self {
        Self {
            id: String::new(),
            at: Ts::now(),
            org_id: String::new(),
            project_id: String::new(),
            env_id: String::new(),
            actor_kind: String::new(),
            actor_id: String::new(),
            event_type: String::new(),
            action: String::new(),
            resource: String::new(),
            outcome: String::new(),
            reason: String::new(),
            status: 0,
            method: String::new(),
            path: String::new(),
            rpc: String::new(),
            function_id: String::new(),
            run_id: String::new(),
        }
    }
}

/// A stored entry: the entry and its position in the log.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
}

/// Which entries a query wants; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub org_id: String,
    pub env_id: String,
    pub action: String,
    pub actor_id: String,
    pub event_type: String,
    pub function_id: String,
    pub run_id: String,
    pub outcome: String,
    pub from: Option<Ts>,
    pub to: Option<Ts>,
    /// 0: from the newest.
    pub before_seq: i64,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct AuditSettingsRecord {
    pub org_id: String,
    pub log_reads: bool,
    pub retention_days: Option<i32>,
    pub updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    id: String,
    at: Ts,
    org_id: String,
    project_id: String,
    env_id: String,
    actor_kind: String,
    actor_id: String,
    event_type: String,
    action: String,
    resource: String,
    outcome: String,
    reason: String,
    status: i32,
    method: String,
    path: String,
    rpc: String,
    function_id: String,
    run_id: String,
}

#[derive(sqlx::FromRow)]
struct AuditSettingsRow {
    org_id: String,
    log_reads: bool,
    retention_days: Option<i32>,
    updated_at: Ts,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        Self {
            seq: r.seq,
            entry: AuditEntry {
                id: r.id,
                at: r.at,
                org_id: r.org_id,
                project_id: r.project_id,
                env_id: r.env_id,
                actor_kind: r.actor_kind,
                actor_id: r.actor_id,
                event_type: r.event_type,
                action: r.action,
                resource: r.resource,
                outcome: r.outcome,
                reason: r.reason,
                status: r.status,
                method: r.method,
                path: r.path,
                rpc: r.rpc,
                function_id: r.function_id,
                run_id: r.run_id,
            },
        }
    }
}

#[async_trait]
impl<D: Db> AuditStore for SqlStore<D> {
    async fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.db
            .writer()
            .await?
            .execute(
                sql!("insert_audit"),
                args![
                    &e.id,
                    e.at,
                    &e.org_id,
                    &e.project_id,
                    &e.env_id,
                    &e.actor_kind,
                    &e.actor_id,
                    &e.event_type,
                    &e.action,
                    &e.resource,
                    &e.outcome,
                    &e.reason,
                    e.status,
                    &e.method,
                    &e.path,
                    &e.rpc,
                    &e.function_id,
                    &e.run_id,
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_audit"),
                args![
                    &f.org_id,
                    &f.env_id,
                    &f.action,
                    &f.actor_id,
                    &f.event_type,
                    &f.function_id,
                    &f.run_id,
                    f.from,
                    f.to,
                    f.before_seq,
                    &f.outcome,
                    f.limit,
                ],
            )
            .await?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    async fn audit_settings(&self, org: &str) -> Result<Option<AuditSettingsRecord>, StoreError> {
        let row: Option<AuditSettingsRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_audit_settings"), args![org])
            .await?;
        Ok(row.map(|r| AuditSettingsRecord {
            org_id: r.org_id,
            log_reads: r.log_reads,
            retention_days: r.retention_days,
            updated_at: r.updated_at,
        }))
    }

    async fn put_audit_settings(&self, s: &AuditSettingsRecord) -> Result<(), StoreError> {
        self.db
            .writer()
            .await?
            .execute(
                sql!("put_audit_settings"),
                args![&s.org_id, s.log_reads, s.retention_days, s.updated_at],
            )
            .await?;
        Ok(())
    }

    async fn delete_expired_audit(&self) -> Result<u64, StoreError> {
        self.db
            .writer()
            .await?
            .execute(sql!("delete_expired_audit"), args![])
            .await
    }
}
