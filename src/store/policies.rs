//! Policy sets in the store: append-only versions per scope (an environment's id, or
//! `platform`), each a mode and a map of CEL modules; the newest version is the one in force.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;

#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The version in force for `scope`, if one was ever saved.
    async fn latest_policy_set(&self, scope: &str) -> Result<Option<PolicySetRecord>, StoreError>;
    async fn get_policy_set(
        &self,
        scope: &str,
        version: i64,
    ) -> Result<Option<PolicySetRecord>, StoreError>;
    /// Newest first.
    async fn list_policy_sets(&self, scope: &str) -> Result<Vec<PolicySetRecord>, StoreError>;
    /// Saves `new` as the next version if the one in force is still `expected` (0: none yet);
    /// otherwise nothing is written and the version in force is returned.
    async fn save_policy_set(
        &self,
        new: &NewPolicySet,
        expected: i64,
    ) -> Result<SaveOutcome, StoreError>;
}

/// One saved version of a scope's policy set.
#[derive(Debug, Clone)]
pub struct PolicySetRecord {
    pub scope: String,
    pub version: i64,
    pub mode: String,
    pub modules: BTreeMap<String, String>,
    pub created_at: Ts,
    pub created_by: String,
}

/// What a save writes: the version number is the store's to choose.
#[derive(Debug, Clone)]
pub struct NewPolicySet {
    pub scope: String,
    pub mode: String,
    pub modules: BTreeMap<String, String>,
    pub created_by: String,
}

#[derive(Debug, Clone)]
pub enum SaveOutcome {
    Saved(PolicySetRecord),
    /// Someone saved first: the caller's `If-Match` is stale.
    Stale {
        current: i64,
    },
}

#[derive(sqlx::FromRow)]
struct PolicySetRow {
    scope: String,
    version: i64,
    mode: String,
    modules: String,
    created_at: Ts,
    created_by: String,
}

impl TryFrom<PolicySetRow> for PolicySetRecord {
    type Error = StoreError;

    fn try_from(r: PolicySetRow) -> Result<Self, StoreError> {
        let modules = serde_json::from_str(&r.modules).map_err(|e| {
            StoreError::Corrupt(format!("policy set {} v{}: {e}", r.scope, r.version))
        })?;
        Ok(Self {
            scope: r.scope,
            version: r.version,
            mode: r.mode,
            modules,
            created_at: r.created_at,
            created_by: r.created_by,
        })
    }
}

#[async_trait]
impl<D: Db> PolicyStore for SqlStore<D> {
    async fn latest_policy_set(&self, scope: &str) -> Result<Option<PolicySetRecord>, StoreError> {
        let row: Option<PolicySetRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("latest_policy_set"), args![scope])
            .await?;
        row.map(PolicySetRecord::try_from).transpose()
    }

    async fn get_policy_set(
        &self,
        scope: &str,
        version: i64,
    ) -> Result<Option<PolicySetRecord>, StoreError> {
        let row: Option<PolicySetRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_policy_set"), args![scope, version])
            .await?;
        row.map(PolicySetRecord::try_from).transpose()
    }

    async fn list_policy_sets(&self, scope: &str) -> Result<Vec<PolicySetRecord>, StoreError> {
        let rows: Vec<PolicySetRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("list_policy_sets"), args![scope])
            .await?;
        rows.into_iter().map(PolicySetRecord::try_from).collect()
    }

    async fn save_policy_set(
        &self,
        new: &NewPolicySet,
        expected: i64,
    ) -> Result<SaveOutcome, StoreError> {
        let mut tx = self.db.begin().await?;
        // Two saves of one scope serialise here, so a stale If-Match is always noticed.
        tx.execute(sql!("policy_set_lock"), args![new.scope.as_str()])
            .await?;
        let latest: Option<PolicySetRow> = tx
            .fetch_optional(sql!("latest_policy_set"), args![new.scope.as_str()])
            .await?;
        let current = latest.as_ref().map_or(0, |r| r.version);
        if current != expected {
            D::commit(tx).await?;
            return Ok(SaveOutcome::Stale { current });
        }
        let record = PolicySetRecord {
            scope: new.scope.clone(),
            version: current + 1,
            mode: new.mode.clone(),
            modules: new.modules.clone(),
            created_at: Ts::now(),
            created_by: new.created_by.clone(),
        };
        let modules = serde_json::to_string(&record.modules)
            .map_err(|e| StoreError::Internal(format!("encoding policy modules: {e}")))?;
        tx.execute(
            sql!("insert_policy_set"),
            args![
                record.scope.as_str(),
                record.version,
                record.mode.as_str(),
                &modules,
                record.created_at,
                record.created_by.as_str(),
            ],
        )
        .await?;
        D::commit(tx).await?;
        Ok(SaveOutcome::Saved(record))
    }
}
