//! The continuous history as the store reads it back: entries after a sequence (the live
//! tailer), the newest sequence.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Entries with `seq > after_seq`, oldest first (all environments: the live tailer).
    async fn history_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRecord>, StoreError>;

    async fn max_history_seq(&self) -> Result<i64, StoreError>;
}

#[derive(Debug, Clone)]
pub struct HistoryRecord {
    pub seq: i64,
    pub recorded_at: Ts,
    pub env_id: EnvId,
    pub kind: String,
    pub run_id: Option<RunId>,
    pub function_id: Option<FunctionId>,
    pub event_id: Option<EventId>,
    pub payload: Value,
}

#[derive(sqlx::FromRow)]
pub(crate) struct HistoryRow {
    pub seq: i64,
    pub recorded_at: Ts,
    pub env_id: String,
    pub kind: String,
    pub run_id: Option<String>,
    pub function_id: Option<String>,
    pub event_id: Option<String>,
    pub payload: Json<Value>,
}

impl From<HistoryRow> for HistoryRecord {
    fn from(r: HistoryRow) -> Self {
        Self {
            seq: r.seq,
            recorded_at: r.recorded_at,
            env_id: EnvId::from_stored(r.env_id),
            kind: r.kind,
            run_id: r.run_id.map(RunId::from_stored),
            function_id: r.function_id.map(FunctionId::from_stored),
            event_id: r.event_id.map(EventId::from_stored),
            payload: r.payload.0,
        }
    }
}

#[async_trait]
impl<D: Db> HistoryStore for SqlStore<D> {
    async fn history_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let rows: Vec<HistoryRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("history_after"), args![after_seq, limit])
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn max_history_seq(&self) -> Result<i64, StoreError> {
        self.db
            .reader()
            .await?
            .scalar(sql!("max_history_seq"), args![])
            .await
    }
}
