//! Run control and history editing in the store: pause, resume, step edits, redaction and
//! deletion. Each locks the run's job row and then the run (the lock order every transaction
//! keeps), reads the facts, applies what `domain::lifecycle::control` (or the redaction rule)
//! decides, and writes its history entry in the same transaction.

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::types::Json;

use super::StoreError;
use super::apply::{apply, write_history};
use super::db::{Db, SqlStore};
use super::execution::{JobRow, RunContext, child_function, run_contexts};
use super::runs::{RunRecord, StepRecord, StepRow, select_run};
use super::sql::{Conn, args, sql};
use super::writes::notify_commit;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::control::{
    self, Actor, EditDecision, PauseDecision, ResumeDecision, ResumeFacts, StepEdit, StepFacts,
};
use crate::domain::lifecycle::{Effects, JobFacts, run_entry};
use crate::domain::redaction::{self, PAYLOAD_FIELDS};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait RunControlStore: Send + Sync {
    async fn pause_run(
        &self,
        env: &EnvId,
        run: &RunId,
        actor: &Actor,
    ) -> Result<ControlOutcome<PauseResult>, StoreError>;

    /// `from_step`: a step id or a step name (its first occurrence) to run again from.
    async fn resume_run(
        &self,
        env: &EnvId,
        run: &RunId,
        from_step: Option<&str>,
        actor: &Actor,
    ) -> Result<ControlOutcome<RunRecord>, StoreError>;

    async fn edit_step(
        &self,
        env: &EnvId,
        step: &StepRef,
        edit: StepEdit,
        output: &Value,
        actor: &Actor,
    ) -> Result<ControlOutcome<EditedStep>, StoreError>;

    /// Redacts one step of a terminal run (`step` = `None`: the whole run, its input, output,
    /// error and every step). Idempotent.
    async fn redact_run(
        &self,
        env: &EnvId,
        run: &RunId,
        step: Option<&str>,
        actor: &Actor,
    ) -> Result<ControlOutcome<()>, StoreError>;

    /// Redacts an event's data (its row, sequence and name stay) and the history entries that
    /// carry it.
    async fn redact_event(
        &self,
        env: &EnvId,
        event: &EventId,
        actor: &Actor,
    ) -> Result<ControlOutcome<()>, StoreError>;

    /// Deletes terminal runs (their steps with them; the history keeps their entries and gets a
    /// `run.deleted` each). Returns the ids deleted.
    async fn delete_runs(
        &self,
        env: &EnvId,
        filter: &DeleteFilter,
        actor: &Actor,
    ) -> Result<Vec<RunId>, StoreError>;
}

/// A step named by its run and its step id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub run: RunId,
    pub step_id: String,
}

/// What a control call found.
#[derive(Debug, Clone)]
pub enum ControlOutcome<T> {
    Done(T),
    NotFound(&'static str),
    /// Not allowed in the run's state; the message says why.
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct PauseResult {
    /// `paused` (now, or it was already) or `pause_requested` (at the next step boundary).
    pub status: &'static str,
    pub run: RunRecord,
    pub effects: Effects,
}

#[derive(Debug, Clone)]
pub struct EditedStep {
    pub previous_output: Option<Value>,
    pub step: StepRecord,
}

/// Which terminal runs to delete; at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct DeleteFilter {
    pub ids: Vec<RunId>,
    pub function_id: Option<FunctionId>,
    /// Terminal statuses only; empty = every terminal status.
    pub statuses: Vec<RunStatus>,
    /// Created strictly before.
    pub until: Option<Ts>,
    pub limit: i64,
}

#[derive(sqlx::FromRow)]
struct LockedEventRow {
    data: Json<Value>,
    entity_id: Option<String>,
    entity_version: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StepFactsRow {
    step_id: String,
    status: String,
    output: Option<Json<Value>>,
    error: Option<Json<Value>>,
}

#[derive(sqlx::FromRow)]
struct StepPosition {
    step_id: String,
    sequence: i32,
}

#[derive(sqlx::FromRow)]
struct PayloadRow {
    seq: i64,
    payload: Json<Value>,
}

#[derive(sqlx::FromRow)]
struct RunPayloads {
    input: Json<Value>,
    output: Option<Json<Value>>,
    error: Option<Json<Value>>,
}

#[derive(sqlx::FromRow)]
struct StepPayloads {
    step_id: String,
    output: Option<Json<Value>>,
    error: Option<Json<Value>>,
    original_output: Option<Json<Value>>,
}

/// The run's job row and the run, locked in that order, with the run's facts.
async fn lock_run<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    id: &RunId,
) -> Result<Option<(RunContext, Option<JobFacts>)>, StoreError> {
    let job: Option<JobRow> = conn
        .fetch_optional(sql!("lock_job"), args![id.as_str()])
        .await?;
    let locked: Option<String> = conn
        .scalar_optional(sql!("lock_run"), args![env.as_str(), id.as_str()])
        .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let mut contexts = run_contexts(conn, &[id.as_str()]).await?;
    let Some(context) = contexts.remove(id.as_str()) else {
        return Ok(None);
    };
    let job = job.as_ref().map(JobRow::facts).transpose()?;
    Ok(Some((context, job)))
}

async fn run_after<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    id: &RunId,
) -> Result<RunRecord, StoreError> {
    select_run(conn, env, id)
        .await?
        .ok_or_else(|| StoreError::Internal("run vanished under lock".into()))
}

/// Replaces the data fields of history payloads with markers; an entry with nothing to
/// redact is left alone (the database refuses an UPDATE of the history that does not redact).
async fn redact_history<C: Conn + ?Sized>(
    conn: &mut C,
    rows: Vec<PayloadRow>,
    now: Ts,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for row in rows {
        let redacted = redaction::redact_fields(&row.payload.0, PAYLOAD_FIELDS, now);
        if redacted != row.payload.0 {
            conn.execute(sql!("redact_history_entry"), args![row.seq, &redacted])
                .await?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn step_payload_redacted(p: &StepPayloads, now: Ts) -> [Option<Value>; 3] {
    [
        redaction::redact_opt(p.output.as_ref().map(|j| &j.0), now),
        redaction::redact_opt(p.error.as_ref().map(|j| &j.0), now),
        redaction::redact_opt(p.original_output.as_ref().map(|j| &j.0), now),
    ]
}

#[async_trait]
impl<D: Db> RunControlStore for SqlStore<D> {
    async fn pause_run(
        &self,
        env: &EnvId,
        id: &RunId,
        actor: &Actor,
    ) -> Result<ControlOutcome<PauseResult>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let Some((context, job)) = lock_run(&mut *tx, env, id).await? else {
            return Ok(ControlOutcome::NotFound("run"));
        };
        let (status, transition) = match control::pause(&context.facts, job.as_ref(), actor) {
            PauseDecision::Paused(t) => ("paused", Some(t)),
            PauseDecision::Requested(t) => ("pause_requested", Some(t)),
            PauseDecision::Unchanged { requested: true } => ("pause_requested", None),
            PauseDecision::Unchanged { requested: false } => ("paused", None),
            PauseDecision::Ended(status) => {
                return Ok(ControlOutcome::Refused(format!(
                    "run '{id}' already ended with status {status}; only unfinished runs can be paused"
                )));
            }
        };
        let effects = match transition {
            Some(t) => apply(&mut *tx, vec![t], now).await?,
            None => Effects::default(),
        };
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        let run = run_after(&mut *tx, env, id).await?;
        D::commit(tx).await?;
        Ok(ControlOutcome::Done(PauseResult {
            status,
            run,
            effects,
        }))
    }

    async fn resume_run(
        &self,
        env: &EnvId,
        id: &RunId,
        from_step: Option<&str>,
        actor: &Actor,
    ) -> Result<ControlOutcome<RunRecord>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let Some((context, job)) = lock_run(&mut *tx, env, id).await? else {
            return Ok(ControlOutcome::NotFound("run"));
        };
        let from = match from_step {
            Some(step) => {
                let found: Option<StepPosition> = tx
                    .fetch_optional(sql!("find_step"), args![id.as_str(), step])
                    .await?;
                match found {
                    Some(p) => Some((p.step_id, p.sequence)),
                    None => {
                        return Ok(ControlOutcome::Refused(format!(
                            "run '{id}' has no step '{step}' to resume from (give a step id or a step name)"
                        )));
                    }
                }
            }
            None => None,
        };
        let lane = if job.is_none() && context.facts.status == RunStatus::Failed {
            child_function(
                &mut *tx,
                env,
                context.facts.function_id.as_str(),
                &context.facts.input,
            )
            .await?
            .and_then(|f| f.lane.map(|l| (l, f.lane_active)))
        } else {
            None
        };
        let facts = ResumeFacts {
            run: &context.facts,
            job: job.as_ref(),
            from_step: from,
            lane,
        };
        let t = match control::resume(&facts, actor) {
            ResumeDecision::Apply(t) | ResumeDecision::RequestWithdrawn(t) => t,
            ResumeDecision::NotResumable(status) => {
                return Ok(ControlOutcome::Refused(format!(
                    "run '{id}' is {status}; only a paused or failed run can be resumed"
                )));
            }
        };
        let effects = apply(&mut *tx, vec![t], now).await?;
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        let run = run_after(&mut *tx, env, id).await?;
        D::commit(tx).await?;
        Ok(ControlOutcome::Done(run))
    }

    async fn edit_step(
        &self,
        env: &EnvId,
        step: &StepRef,
        edit: StepEdit,
        output: &Value,
        actor: &Actor,
    ) -> Result<ControlOutcome<EditedStep>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let Some((context, job)) = lock_run(&mut *tx, env, &step.run).await? else {
            return Ok(ControlOutcome::NotFound("run"));
        };
        let row: Option<StepFactsRow> = tx
            .fetch_optional(
                sql!("step_facts"),
                args![step.run.as_str(), step.step_id.as_str()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(ControlOutcome::NotFound("step"));
        };
        let facts = StepFacts {
            step_id: row.step_id,
            status: row.status,
            output: row.output.map(|j| j.0),
            error: row.error.map(|j| j.0),
        };
        let (t, previous_output) = match control::edit_step(
            &context.facts,
            job.as_ref(),
            &facts,
            edit,
            output.clone(),
            actor,
        ) {
            EditDecision::Apply {
                transition,
                previous_output,
            } => (transition, previous_output),
            EditDecision::Refused(why) => return Ok(ControlOutcome::Refused(why)),
        };
        let effects = apply(&mut *tx, vec![t], now).await?;
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        let row: StepRow = tx
            .fetch_one(
                sql!("get_step"),
                args![step.run.as_str(), step.step_id.as_str()],
            )
            .await?;
        D::commit(tx).await?;
        Ok(ControlOutcome::Done(EditedStep {
            previous_output,
            step: row.into(),
        }))
    }

    async fn redact_run(
        &self,
        env: &EnvId,
        id: &RunId,
        step: Option<&str>,
        actor: &Actor,
    ) -> Result<ControlOutcome<()>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let Some((context, _)) = lock_run(&mut *tx, env, id).await? else {
            return Ok(ControlOutcome::NotFound("run"));
        };
        if !context.facts.status.is_terminal() {
            return Ok(ControlOutcome::Refused(format!(
                "run '{id}' is {}; only a completed, failed or cancelled run can be redacted (a resumed handler reads its step outputs)",
                context.facts.status
            )));
        }
        let steps: Vec<StepPayloads> = tx
            .fetch_all(sql!("step_payloads"), args![id.as_str(), step])
            .await?;
        if step.is_some() && steps.is_empty() {
            return Ok(ControlOutcome::NotFound("step"));
        }
        for p in &steps {
            let [output, error, original] = step_payload_redacted(p, now);
            tx.execute(
                sql!("redact_step"),
                args![
                    id.as_str(),
                    p.step_id.as_str(),
                    output.as_ref(),
                    error.as_ref(),
                    original.as_ref(),
                    now
                ],
            )
            .await?;
        }
        let step_ids: Value = steps.iter().map(|s| json!(s.step_id)).collect();
        let entries: Vec<PayloadRow> = match step {
            Some(_) => {
                tx.fetch_all(sql!("run_step_history"), args![id.as_str(), &step_ids])
                    .await?
            }
            None => {
                tx.fetch_all(sql!("run_history_payloads"), args![id.as_str()])
                    .await?
            }
        };
        let rewritten = redact_history(&mut *tx, entries, now).await?;
        let kind = if step.is_some() {
            HistoryKind::StepRedacted
        } else {
            let run: RunPayloads = tx
                .fetch_one(sql!("run_payloads"), args![id.as_str()])
                .await?;
            let input = redaction::redact(&run.input.0, now);
            let output = redaction::redact_opt(run.output.as_ref().map(|j| &j.0), now);
            let error = redaction::redact_opt(run.error.as_ref().map(|j| &j.0), now);
            tx.execute(
                sql!("redact_run"),
                args![id.as_str(), &input, output.as_ref(), error.as_ref(), now],
            )
            .await?;
            HistoryKind::RunRedacted
        };
        let entry = run_entry(
            env,
            kind,
            id,
            json!({
                "step_ids": step_ids, "history_entries_rewritten": rewritten,
                "actor_id": actor.key_id, "reason": actor.reason,
            }),
        );
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(ControlOutcome::Done(()))
    }

    async fn redact_event(
        &self,
        env: &EnvId,
        event: &EventId,
        actor: &Actor,
    ) -> Result<ControlOutcome<()>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let locked: Option<LockedEventRow> = tx
            .fetch_optional(sql!("lock_event_data"), args![env.as_str(), event.as_str()])
            .await?;
        let Some(locked) = locked else {
            return Ok(ControlOutcome::NotFound("event"));
        };
        let redacted = redaction::redact(&locked.data.0, now);
        // Snapshots of the event's stream from its version on were folded over the removed
        // bytes: they go too (the stream is rebuilt from its events and earlier snapshots).
        let mut snapshots_dropped = 0;
        if let (Some(entity), Some(version)) = (&locked.entity_id, locked.entity_version) {
            snapshots_dropped = tx
                .execute(
                    sql!("delete_stream_snapshots"),
                    args![env.as_str(), entity.as_str(), Some(version)],
                )
                .await?;
        }
        tx.execute(
            sql!("redact_event"),
            args![env.as_str(), event.as_str(), &redacted],
        )
        .await?;
        let entries: Vec<PayloadRow> = tx
            .fetch_all(sql!("event_history_payloads"), args![event.as_str()])
            .await?;
        let rewritten = redact_history(&mut *tx, entries, now).await?;
        let entry = NewHistoryEntry {
            env_id: env.clone(),
            kind: HistoryKind::EventRedacted,
            run_id: None,
            function_id: None,
            event_id: Some(event.clone()),
            payload: json!({
                "sha256": redacted.get("sha256"), "history_entries_rewritten": rewritten,
                "snapshots_dropped": snapshots_dropped,
                "actor_id": actor.key_id, "reason": actor.reason,
            }),
        };
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(ControlOutcome::Done(()))
    }

    async fn delete_runs(
        &self,
        env: &EnvId,
        filter: &DeleteFilter,
        actor: &Actor,
    ) -> Result<Vec<RunId>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let ids: Value = filter.ids.iter().map(|id| json!(id)).collect();
        let statuses: Value = filter.statuses.iter().map(|s| json!(s.as_str())).collect();
        let deleted: Vec<String> = tx
            .scalars(
                sql!("lock_terminal_runs"),
                args![
                    env.as_str(),
                    &ids,
                    filter.function_id.as_ref().map(|f| f.as_str()),
                    &statuses,
                    filter.until,
                    filter.limit,
                ],
            )
            .await?;
        if deleted.is_empty() {
            D::commit(tx).await?;
            return Ok(Vec::new());
        }
        let doomed: Value = deleted.iter().map(|id| json!(id)).collect();
        tx.execute(sql!("delete_steps_of_runs"), args![&doomed])
            .await?;
        tx.execute(sql!("delete_runs"), args![&doomed]).await?;
        let ids: Vec<RunId> = deleted.into_iter().map(RunId::from_stored).collect();
        let entries: Vec<NewHistoryEntry> = ids
            .iter()
            .map(|id| {
                run_entry(
                    env,
                    HistoryKind::RunDeleted,
                    id,
                    json!({"actor_id": actor.key_id, "reason": actor.reason}),
                )
            })
            .collect();
        write_history(&mut *tx, &entries, now).await?;
        D::commit(tx).await?;
        Ok(ids)
    }
}
