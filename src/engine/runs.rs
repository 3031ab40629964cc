//! Reading runs and their steps and history; cancelling a run.

use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};
use crate::store::execution::CancelOutcome;
use crate::store::history::HistoryRecord;
use crate::store::runs::{PageRequest, RunQuery, RunRecord, StepRecord};

use super::{Engine, EngineError, cursor, page_limit};

#[derive(Debug, Clone, Default)]
pub struct RunPageQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
    pub function_id: Option<FunctionId>,
    pub statuses: Vec<RunStatus>,
    pub event_id: Option<EventId>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
}

#[derive(Debug, Clone)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub limit: i64,
    pub next_cursor: Option<String>,
}

impl Engine {
    pub async fn get_run(&self, env: &EnvId, id: &RunId) -> Result<RunRecord, EngineError> {
        self.store()
            .get_run(env, id)
            .await?
            .ok_or_else(|| EngineError::not_found("run", id))
    }

    pub async fn list_runs(&self, env: &EnvId, q: RunPageQuery) -> Result<RunPage, EngineError> {
        let limit = page_limit(q.limit)?;
        let before_seq = q
            .cursor
            .as_deref()
            .map(|c| cursor::decode_seq(c, "r"))
            .transpose()?;
        let query = RunQuery {
            page: PageRequest {
                before_seq,
                limit: limit + 1,
            },
            function_id: q.function_id,
            statuses: q.statuses,
            event_id: q.event_id,
            since: q.since,
            until: q.until,
        };
        let mut runs = self.store().list_runs(env, &query).await?;
        let next_cursor = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| cursor::encode("r", &r.seq.to_string()))
        } else {
            None
        };
        Ok(RunPage {
            runs,
            limit,
            next_cursor,
        })
    }

    pub async fn run_steps(&self, env: &EnvId, id: &RunId) -> Result<Vec<StepRecord>, EngineError> {
        self.get_run(env, id).await?;
        Ok(self.store().run_steps(env, id).await?)
    }

    pub async fn run_history(
        &self,
        env: &EnvId,
        id: &RunId,
    ) -> Result<Vec<HistoryRecord>, EngineError> {
        self.get_run(env, id).await?;
        Ok(self.store().run_history(env, id, None).await?)
    }

    /// Cancels a run that has not ended. Cancelling a cancelled run returns it unchanged
    /// (idempotent); a completed or failed run cannot be cancelled.
    pub async fn cancel_run(
        &self,
        env: &EnvId,
        id: &RunId,
        reason: &str,
    ) -> Result<RunRecord, EngineError> {
        let reason = if reason.trim().is_empty() {
            "cancelled by request"
        } else {
            reason
        };
        match self.store().cancel_run(env, id, reason).await? {
            CancelOutcome::Cancelled(run) => {
                self.bus().publish(&crate::domain::lifecycle::Effects {
                    work_ready: true,
                    finished_runs: vec![run.id.clone()],
                    ended_runs: vec![crate::domain::lifecycle::EndedRun {
                        env: env.clone(),
                        function_id: run.function_id.clone(),
                        status: RunStatus::Cancelled,
                        created_at: run.created_at,
                    }],
                    ..Default::default()
                });
                metrics::counter!("ironflow_runs_cancelled_total").increment(1);
                Ok(run)
            }
            CancelOutcome::AlreadyEnded(run) if run.status == RunStatus::Cancelled => Ok(run),
            CancelOutcome::AlreadyEnded(run) => Err(EngineError::FailedPrecondition(format!(
                "run '{id}' already ended with status {}; only unfinished runs can be cancelled",
                run.status
            ))),
            CancelOutcome::NotFound => Err(EngineError::not_found("run", id)),
        }
    }
}
