//! Runs and their steps in the store, as read: one run, pages of runs, a run's steps and
//! history, counts. (Changes to runs are the execution store's.)

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::history::{HistoryRecord, HistoryRow};
use super::sql::{Conn, args, sql};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait RunStore: Send + Sync {
    async fn get_run(&self, env: &EnvId, id: &RunId) -> Result<Option<RunRecord>, StoreError>;

    async fn list_runs(&self, env: &EnvId, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError>;

    async fn run_steps(&self, env: &EnvId, run: &RunId) -> Result<Vec<StepRecord>, StoreError>;

    /// The run's history, oldest first; with `until`, only what was recorded at or before it.
    async fn run_history(
        &self,
        env: &EnvId,
        run: &RunId,
        until: Option<Ts>,
    ) -> Result<Vec<HistoryRecord>, StoreError>;

    async fn env_counts(&self, env: &EnvId) -> Result<EnvCounts, StoreError>;

    /// The unfinished runs of a function with their inputs (for `cancelOn` matching).
    async fn active_runs_of_function(
        &self,
        env: &EnvId,
        function: &FunctionId,
    ) -> Result<Vec<ActiveRun>, StoreError>;
}

/// An unfinished run and the data it was started with.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub id: RunId,
    pub input: Value,
}

#[derive(sqlx::FromRow)]
struct ActiveRunRow {
    id: String,
    input: Json<Value>,
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub seq: i64,
    pub id: RunId,
    pub env_id: EnvId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub event_id: Option<EventId>,
    pub event_name: Option<String>,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub parent_run_id: Option<RunId>,
    pub cancellation_cause: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub pause_requested: bool,
    pub pause_reason: Option<String>,
    pub resume_from_step: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run_id: RunId,
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i32,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i32,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// What the worker recorded, when a person edited the output since.
    pub original_output: Option<Value>,
    pub patched_at: Option<Ts>,
    pub patched_by: Option<String>,
    pub injected: bool,
}

/// Keyset page request shared by the list queries: newest first, strictly older than `before_seq`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub before_seq: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub page: PageRequest,
    pub function_id: Option<FunctionId>,
    pub statuses: Vec<RunStatus>,
    pub event_id: Option<EventId>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
}

#[derive(Debug, Clone, Default)]
pub struct EnvCounts {
    pub functions: i64,
    pub active_runs: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub seq: i64,
    pub id: String,
    pub env_id: String,
    pub function_id: String,
    pub function_version: i32,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    pub status: String,
    pub input: Json<Value>,
    pub output: Option<Json<Value>>,
    pub error: Option<Json<Value>>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub parent_run_id: Option<String>,
    pub cancellation_cause: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub pause_requested: bool,
    pub pause_reason: Option<String>,
    pub resume_from_step: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i32,
    pub status: String,
    pub output: Option<Json<Value>>,
    pub error: Option<Json<Value>>,
    pub attempt: i32,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub original_output: Option<Json<Value>>,
    pub patched_at: Option<Ts>,
    pub patched_by: Option<String>,
    pub injected: bool,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;

    fn try_from(r: RunRow) -> Result<Self, Self::Error> {
        let status = r
            .status
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("run {}: {e}", r.id)))?;
        Ok(Self {
            seq: r.seq,
            id: RunId::from_stored(r.id),
            env_id: EnvId::from_stored(r.env_id),
            function_id: FunctionId::from_stored(r.function_id),
            function_version: r.function_version,
            event_id: r.event_id.map(EventId::from_stored),
            event_name: r.event_name,
            status,
            input: r.input.0,
            output: r.output.map(|j| j.0),
            error: r.error.map(|j| j.0),
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            parent_run_id: r.parent_run_id.map(RunId::from_stored),
            cancellation_cause: r.cancellation_cause,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            pause_requested: r.pause_requested,
            pause_reason: r.pause_reason,
            resume_from_step: r.resume_from_step,
        })
    }
}

impl From<StepRow> for StepRecord {
    fn from(r: StepRow) -> Self {
        Self {
            run_id: RunId::from_stored(r.run_id),
            step_id: r.step_id,
            name: r.name,
            step_type: r.step_type,
            sequence: r.sequence,
            status: r.status,
            output: r.output.map(|j| j.0),
            error: r.error.map(|j| j.0),
            attempt: r.attempt,
            started_at: r.started_at,
            ended_at: r.ended_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            original_output: r.original_output.map(|j| j.0),
            patched_at: r.patched_at,
            patched_by: r.patched_by,
            injected: r.injected,
        }
    }
}

#[derive(sqlx::FromRow)]
struct EnvCountsRow {
    functions: i64,
    active_runs: i64,
}

pub(crate) async fn select_run<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    id: &RunId,
) -> Result<Option<RunRecord>, StoreError> {
    let row: Option<RunRow> = conn
        .fetch_optional(sql!("get_run"), args![env.as_str(), id.as_str()])
        .await?;
    row.map(RunRecord::try_from).transpose()
}

#[async_trait]
impl<D: Db> RunStore for SqlStore<D> {
    async fn get_run(&self, env: &EnvId, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        select_run(&mut *self.db.reader().await?, env, id).await
    }

    async fn list_runs(&self, env: &EnvId, q: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        let statuses: Option<Value> = (!q.statuses.is_empty())
            .then(|| q.statuses.iter().map(|s| Value::from(s.as_str())).collect());
        let rows: Vec<RunRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_runs"),
                args![
                    env.as_str(),
                    q.page.before_seq,
                    q.function_id.as_ref().map(|f| f.as_str()),
                    statuses.as_ref(),
                    q.event_id.as_ref().map(|e| e.as_str()),
                    q.since,
                    q.until,
                    q.page.limit,
                ],
            )
            .await?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }

    async fn run_steps(&self, env: &EnvId, run: &RunId) -> Result<Vec<StepRecord>, StoreError> {
        let rows: Vec<StepRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("run_steps"), args![env.as_str(), run.as_str()])
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn run_history(
        &self,
        env: &EnvId,
        run: &RunId,
        until: Option<Ts>,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let rows: Vec<HistoryRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("run_history"),
                args![env.as_str(), run.as_str(), until],
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn env_counts(&self, env: &EnvId) -> Result<EnvCounts, StoreError> {
        let row: EnvCountsRow = self
            .db
            .reader()
            .await?
            .fetch_one(sql!("env_counts"), args![env.as_str()])
            .await?;
        Ok(EnvCounts {
            functions: row.functions,
            active_runs: row.active_runs,
        })
    }

    async fn active_runs_of_function(
        &self,
        env: &EnvId,
        function: &FunctionId,
    ) -> Result<Vec<ActiveRun>, StoreError> {
        let rows: Vec<ActiveRunRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("active_runs_of_function"),
                args![env.as_str(), function.as_str()],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ActiveRun {
                id: RunId::from_stored(r.id),
                input: r.input.0,
            })
            .collect())
    }
}
