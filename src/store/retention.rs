//! Retention's storage: the facts a pass decides on ([`crate::domain::retention`]), each
//! environment's setting, and carrying a plan out — partitions made and dropped (Postgres),
//! expired rows removed in bounded batches, one transaction each.

use async_trait::async_trait;
use serde_json::Value;

use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::{Backend, StoreError};
use crate::domain::retention::{
    EnvCutoff, EnvRetention, HistoryPartition, NewPartition, RetentionFacts,
};
use crate::domain::time::Ts;
use crate::ids::EnvId;

/// What one batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedBatch {
    pub runs: u64,
    pub steps: u64,
    pub events: u64,
    pub history: u64,
}

impl RemovedBatch {
    pub fn total(&self) -> u64 {
        self.runs + self.steps + self.events + self.history
    }

    pub fn add(&mut self, other: RemovedBatch) {
        self.runs += other.runs;
        self.steps += other.steps;
        self.events += other.events;
        self.history += other.history;
    }
}

#[async_trait]
pub trait RetentionStore {
    async fn retention_facts(&self, now: Ts) -> Result<RetentionFacts, StoreError>;
    /// An environment's retention in days (`None`: keep everything).
    async fn env_retention(&self, env: &EnvId) -> Result<Option<u32>, StoreError>;
    async fn set_env_retention(
        &self,
        env: &EnvId,
        days: Option<u32>,
        now: Ts,
    ) -> Result<(), StoreError>;
    async fn create_history_partition(&self, partition: &NewPartition) -> Result<(), StoreError>;
    async fn drop_history_partition(&self, name: &str) -> Result<(), StoreError>;
    /// Removes up to `limit` expired runs (with their steps, jobs and waits), events and history
    /// entries of one environment, in one transaction.
    async fn remove_expired(
        &self,
        cutoff: &EnvCutoff,
        limit: i64,
    ) -> Result<RemovedBatch, StoreError>;
}

#[derive(sqlx::FromRow)]
struct EnvRetentionRow {
    env_id: String,
    retention_days: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct PartitionRow {
    name: String,
    from_at: Option<Ts>,
    to_at: Option<Ts>,
}

fn days(stored: Option<i32>) -> Option<u32> {
    stored.and_then(|d| u32::try_from(d).ok())
}

#[async_trait]
impl<D: Db> RetentionStore for SqlStore<D> {
    async fn retention_facts(&self, now: Ts) -> Result<RetentionFacts, StoreError> {
        let mut conn = self.db.reader().await?;
        let envs: Vec<EnvRetentionRow> = conn.fetch_all(sql!("retention_envs"), args![]).await?;
        let partitions = match self.db.backend() {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let rows: Vec<PartitionRow> =
                    conn.fetch_all(sql!("history_partitions"), args![]).await?;
                Some(
                    rows.into_iter()
                        .map(|r| HistoryPartition {
                            name: r.name,
                            from: r.from_at,
                            to: r.to_at,
                        })
                        .collect(),
                )
            }
        };
        Ok(RetentionFacts {
            now,
            envs: envs
                .into_iter()
                .map(|r| EnvRetention {
                    env_id: r.env_id,
                    days: days(r.retention_days),
                })
                .collect(),
            partitions,
        })
    }

    async fn env_retention(&self, env: &EnvId) -> Result<Option<u32>, StoreError> {
        let stored: Option<Option<i32>> = self
            .db
            .reader()
            .await?
            .scalar_optional(sql!("env_retention"), args![env.as_str()])
            .await?;
        Ok(days(stored.flatten()))
    }

    async fn set_env_retention(
        &self,
        env: &EnvId,
        days: Option<u32>,
        now: Ts,
    ) -> Result<(), StoreError> {
        let days = days.map(|d| i32::try_from(d).unwrap_or(i32::MAX));
        self.db
            .writer()
            .await?
            .execute(sql!("set_env_retention"), args![env.as_str(), days, now])
            .await?;
        Ok(())
    }

    async fn create_history_partition(&self, p: &NewPartition) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("create_history_partition"),
            args![p.name.as_str(), p.from, p.to],
        )
        .await?;
        D::commit(tx).await
    }

    async fn drop_history_partition(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(sql!("drop_history_partition"), args![name])
            .await?;
        D::commit(tx).await
    }

    async fn remove_expired(
        &self,
        cutoff: &EnvCutoff,
        limit: i64,
    ) -> Result<RemovedBatch, StoreError> {
        let env = cutoff.env_id.as_str();
        let mut tx = self.db.begin().await?;
        let mut removed = RemovedBatch::default();
        let runs: Vec<String> = tx
            .scalars(sql!("expired_run_ids"), args![env, cutoff.before, limit])
            .await?;
        if !runs.is_empty() {
            let ids = Value::from(runs);
            removed.steps = tx
                .execute(sql!("delete_expired_steps"), args![&ids])
                .await?;
            tx.execute(sql!("delete_expired_jobs"), args![&ids]).await?;
            tx.execute(sql!("delete_expired_waits"), args![&ids])
                .await?;
            removed.runs = tx.execute(sql!("delete_expired_runs"), args![&ids]).await?;
        }
        removed.events = tx
            .execute(
                sql!("delete_expired_events"),
                args![env, cutoff.before, limit],
            )
            .await?;
        if let Some(before) = cutoff.history_before {
            removed.history = tx
                .execute(sql!("delete_expired_history"), args![env, before, limit])
                .await?;
        }
        D::commit(tx).await?;
        Ok(removed)
    }
}
