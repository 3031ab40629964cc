//! Reading the audit log and its per-organisation settings (what is recorded, how long kept).

use super::{Engine, EngineError};
use crate::domain::time::Ts;
use crate::store::audit::{AuditFilter, AuditRecord, AuditSettingsRecord};

/// The longest retention a setting may ask for (ten years).
pub const MAX_RETENTION_DAYS: i32 = 3650;

/// An audit query; empty strings match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
    pub retention_days: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    pub log_reads: bool,
    /// None: keep every entry.
    pub retention_days: Option<i32>,
    pub updated_at: Option<Ts>,
}

impl Engine {
    pub async fn audit_page(&self, query: AuditQuery) -> Result<AuditPage, EngineError> {
        let limit = super::page_limit(query.limit)?;
        let before_seq = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => 0,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                EngineError::InvalidArgument(format!("cursor '{c}' is not one this server gave"))
            })?,
        };
        let org = query.filter.org_id.clone();
        let mut filter = query.filter;
        filter.before_seq = before_seq;
        filter.limit = limit + 1;
        let mut entries = self.store().list_audit(&filter).await?;
        let next_cursor = if entries.len() as i64 > limit {
            entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            entries.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_cursor,
            retention_days: self.audit_settings(&org).await?.retention_days,
        })
    }

    pub async fn audit_settings(&self, org: &str) -> Result<AuditSettings, EngineError> {
        Ok(self
            .store()
            .audit_settings(org)
            .await?
            .map(|s| AuditSettings {
                log_reads: s.log_reads,
                retention_days: s.retention_days,
                updated_at: Some(s.updated_at),
            })
            .unwrap_or_default())
    }

    pub async fn set_audit_settings(
        &self,
        org: &str,
        log_reads: Option<bool>,
        retention_days: Option<Option<i32>>,
    ) -> Result<AuditSettings, EngineError> {
        let current = self.audit_settings(org).await?;
        let retention_days = retention_days.unwrap_or(current.retention_days);
        if let Some(days) = retention_days
            && !(1..=MAX_RETENTION_DAYS).contains(&days)
        {
            return Err(EngineError::InvalidArgument(format!(
                "retention_days must be between 1 and {MAX_RETENTION_DAYS}, or null to keep everything"
            )));
        }
        self.store()
            .put_audit_settings(&AuditSettingsRecord {
                org_id: org.to_owned(),
                log_reads: log_reads.unwrap_or(current.log_reads),
                retention_days,
                updated_at: Ts::now(),
            })
            .await?;
        self.forget_audit_settings(org);
        self.audit_settings(org).await
    }

    /// Removes entries past their org's retention (the upkeep loop calls this).
    pub async fn sweep_audit(&self) -> Result<u64, EngineError> {
        Ok(self.store().delete_expired_audit().await?)
    }
}
