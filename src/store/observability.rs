//! What the dashboard's overview and the Prometheus gauges read: queue depth per function
//! (every function, 0 when it has no jobs), connected workers and open breakers per
//! environment, recent runs' creation-to-first-dispatch delays.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait ObservabilityStore: Send + Sync {
    /// Jobs per function of one environment (or all with `None`): ready to claim now, due later,
    /// leased. Functions with no jobs are listed with zeros.
    async fn queue_depths(
        &self,
        env: Option<&EnvId>,
        now: Ts,
    ) -> Result<Vec<QueueDepth>, StoreError>;
    /// Workers heard from since `since`, per environment.
    async fn connected_worker_counts(&self, since: Ts) -> Result<Vec<EnvCount>, StoreError>;
    /// Circuit breakers not closed, per environment.
    async fn open_breaker_counts(&self) -> Result<Vec<EnvCount>, StoreError>;
    /// The newest `limit` runs' creation and first dispatch (runs not yet dispatched skipped).
    async fn recent_start_delays(
        &self,
        env: &EnvId,
        limit: i64,
    ) -> Result<Vec<StartDelay>, StoreError>;
    /// Every projection, by environment and name (for the lag gauge).
    async fn all_projection_names(&self) -> Result<Vec<ProjectionName>, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueDepth {
    pub env_id: String,
    pub function_id: String,
    pub ready: i64,
    pub scheduled: i64,
    pub leased: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvCount {
    pub env_id: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StartDelay {
    pub created_at: Ts,
    pub started_at: Ts,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProjectionName {
    pub env_id: String,
    pub name: String,
}

#[async_trait]
impl<D: Db> ObservabilityStore for SqlStore<D> {
    async fn queue_depths(
        &self,
        env: Option<&EnvId>,
        now: Ts,
    ) -> Result<Vec<QueueDepth>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("queue_depths"), args![env.map(EnvId::as_str), now])
            .await
    }

    async fn connected_worker_counts(&self, since: Ts) -> Result<Vec<EnvCount>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("connected_worker_counts"), args![since])
            .await
    }

    async fn open_breaker_counts(&self) -> Result<Vec<EnvCount>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("open_breaker_counts"), args![])
            .await
    }

    async fn recent_start_delays(
        &self,
        env: &EnvId,
        limit: i64,
    ) -> Result<Vec<StartDelay>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("recent_start_delays"), args![env.as_str(), limit])
            .await
    }

    async fn all_projection_names(&self) -> Result<Vec<ProjectionName>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("all_projection_names"), args![])
            .await
    }
}
