//! Run control and history editing (pause, resume, paused state, inject, patch, redact,
//! delete) and time travel (a run's state at an instant, its timeline) as engine operations.

use serde_json::Value;

use crate::domain::lifecycle::control::{Actor, StepEdit};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::domain::time_travel::{self, Entry, RunAt, RunIdentity, TimelineEntry};
use crate::ids::{EnvId, EventId, FunctionId, RunId};
use crate::store::control::{ControlOutcome, DeleteFilter, StepRef};
use crate::store::runs::{RunRecord, StepRecord};

use super::{Engine, EngineError};
use crate::store::Wakeup;

/// The most runs one `DeleteRuns` call removes (the SDK calls again until it gets 0).
pub const MAX_DELETE_BATCH: i64 = 10_000;

/// A paused run's steps as an operator repairs them.
#[derive(Debug, Clone)]
pub struct PausedState {
    /// Completed and failed steps, in order.
    pub steps: Vec<StepRecord>,
    /// The step the run stopped at (a sleep, a wait, a failed step), when known.
    pub next_step_hint: Option<String>,
    pub pause_reason: Option<String>,
}

/// What `DeleteRuns` selects (terminal runs only; at least one filter).
#[derive(Debug, Clone, Default)]
pub struct DeleteRunsQuery {
    pub function_id: Option<FunctionId>,
    pub status: Option<RunStatus>,
    pub until: Option<Ts>,
}

fn outcome<T>(o: ControlOutcome<T>, id: &dyn std::fmt::Display) -> Result<T, EngineError> {
    match o {
        ControlOutcome::Done(t) => Ok(t),
        ControlOutcome::NotFound(kind) => Err(EngineError::not_found(kind, id)),
        ControlOutcome::Refused(why) => Err(EngineError::FailedPrecondition(why)),
    }
}

impl Engine {
    /// `paused` (now, or it already was) or `pause_requested` (at the next step boundary).
    pub async fn pause_run(
        &self,
        env: &EnvId,
        id: &RunId,
        actor: &Actor,
    ) -> Result<(&'static str, RunRecord), EngineError> {
        let result = outcome(self.store().pause_run(env, id, actor).await?, id)?;
        self.bus().publish(&result.effects);
        Ok((result.status, result.run))
    }

    pub async fn resume_run(
        &self,
        env: &EnvId,
        id: &RunId,
        from_step: Option<&str>,
        actor: &Actor,
    ) -> Result<RunRecord, EngineError> {
        let run = outcome(
            self.store().resume_run(env, id, from_step, actor).await?,
            id,
        )?;
        // The job is back where it was, with a due instant the timer did not hear of.
        self.bus().wake(Wakeup::WorkReady);
        Ok(run)
    }

    pub async fn paused_state(&self, env: &EnvId, id: &RunId) -> Result<PausedState, EngineError> {
        let run = self.get_run(env, id).await?;
        let steps = self.store().run_steps(env, id).await?;
        let next_step_hint = steps
            .iter()
            .find(|s| s.status != "completed")
            .map(|s| s.name.clone());
        Ok(PausedState {
            steps: steps
                .into_iter()
                .filter(|s| matches!(s.status.as_str(), "completed" | "failed"))
                .collect(),
            next_step_hint,
            pause_reason: run.pause_reason,
        })
    }

    /// Replaces a paused run's step output; returns the edited step and its previous output.
    pub async fn edit_step(
        &self,
        env: &EnvId,
        step: &StepRef,
        edit: StepEdit,
        output: &Value,
        actor: &Actor,
    ) -> Result<(StepRecord, Option<Value>), EngineError> {
        crate::domain::storable::check_json("output", output)
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let id = format!("{}:{}", step.run, step.step_id);
        let edited = outcome(
            self.store()
                .edit_step(env, step, edit, output, actor)
                .await?,
            &id,
        )?;
        self.bus().history_appended();
        Ok((edited.step, edited.previous_output))
    }

    /// Redacts a terminal run (`step`: one of its steps only).
    pub async fn redact_run(
        &self,
        env: &EnvId,
        id: &RunId,
        step: Option<&str>,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        outcome(self.store().redact_run(env, id, step, actor).await?, id)?;
        self.bus().history_appended();
        Ok(())
    }

    pub async fn redact_event(
        &self,
        env: &EnvId,
        id: &EventId,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        outcome(self.store().redact_event(env, id, actor).await?, id)?;
        self.bus().history_appended();
        Ok(())
    }

    /// Deletes one terminal run and its steps.
    pub async fn delete_run(
        &self,
        env: &EnvId,
        id: &RunId,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        let run = self.get_run(env, id).await?;
        if !run.status.is_terminal() {
            return Err(EngineError::FailedPrecondition(format!(
                "run '{id}' is {}; only a completed, failed or cancelled run can be deleted",
                run.status
            )));
        }
        let filter = DeleteFilter {
            ids: vec![id.clone()],
            limit: 1,
            ..DeleteFilter::default()
        };
        let deleted = self.store().delete_runs(env, &filter, actor).await?;
        if deleted.is_empty() {
            // It stopped being terminal (resumed) between the read and the lock.
            return Err(EngineError::FailedPrecondition(format!(
                "run '{id}' is no longer terminal; it was not deleted"
            )));
        }
        self.bus().history_appended();
        Ok(())
    }

    /// Deletes up to [`MAX_DELETE_BATCH`] terminal runs matching the query.
    pub async fn delete_runs(
        &self,
        env: &EnvId,
        query: &DeleteRunsQuery,
        actor: &Actor,
    ) -> Result<usize, EngineError> {
        if query.function_id.is_none() && query.status.is_none() && query.until.is_none() {
            return Err(EngineError::InvalidArgument(
                "DeleteRuns needs at least one filter (function_id, status or until)".into(),
            ));
        }
        if let Some(status) = query.status.filter(|s| !s.is_terminal()) {
            return Err(EngineError::InvalidArgument(format!(
                "status {status}: only terminal runs (completed, failed, cancelled) can be deleted"
            )));
        }
        let filter = DeleteFilter {
            ids: Vec::new(),
            function_id: query.function_id.clone(),
            statuses: query.status.into_iter().collect(),
            until: query.until,
            limit: MAX_DELETE_BATCH,
        };
        let deleted = self.store().delete_runs(env, &filter, actor).await?;
        if !deleted.is_empty() {
            self.bus().history_appended();
            metrics::counter!("ironflow_runs_deleted_total").increment(deleted.len() as u64);
        }
        Ok(deleted.len())
    }

    /// The run and its history entries (with `until`, those recorded at or before it).
    async fn run_entries(
        &self,
        env: &EnvId,
        id: &RunId,
        until: Option<Ts>,
    ) -> Result<(RunRecord, Vec<Entry>), EngineError> {
        let run = self.get_run(env, id).await?;
        let entries = self
            .store()
            .run_history(env, id, until)
            .await?
            .into_iter()
            .map(|h| Entry {
                seq: h.seq,
                recorded_at: h.recorded_at,
                kind: h.kind,
                payload: h.payload,
            })
            .collect();
        Ok((run, entries))
    }

    /// The run as it was at `at`, folded from its history.
    pub async fn run_state_at(
        &self,
        env: &EnvId,
        id: &RunId,
        at: Ts,
    ) -> Result<(RunRecord, RunAt), EngineError> {
        let (run, entries) = self.run_entries(env, id, Some(at)).await?;
        let identity = RunIdentity {
            run_id: run.id.to_string(),
            function_id: run.function_id.to_string(),
            input: run.input.clone(),
            created_at: run.created_at,
        };
        let state = time_travel::state_at(&identity, &entries, at).ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "run '{id}' did not exist at {}; it was created at {}",
                at.to_rfc3339(),
                run.created_at.to_rfc3339()
            ))
        })?;
        Ok((run, state))
    }

    pub async fn run_timeline(
        &self,
        env: &EnvId,
        id: &RunId,
    ) -> Result<Vec<TimelineEntry>, EngineError> {
        let (run, entries) = self.run_entries(env, id, None).await?;
        Ok(time_travel::timeline(run.id.as_str(), &entries))
    }
}
