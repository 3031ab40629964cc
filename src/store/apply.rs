//! Applies lifecycle transitions ([`crate::domain::lifecycle`]) to the tables. A batch of
//! transitions (a group commit's reports, a claim, the timer's sweep) is applied with a
//! constant number of statements per kind of change — every step row in one statement, every
//! history entry in one, every ended run in one — and its follow-ups (lane promotions, parents
//! resumed) after it, each decided from facts read then.
//!
//! Order: step rows first (a yield's step is resolved right after it is written), then the
//! changes that must go one at a time, in order (conditional resumes, run and wait inserts),
//! then the set-wise row changes, then the history, then the follow-ups (a promotion counts the
//! lane after the ended runs' jobs are gone).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::StoreError;
use super::sql::{Conn, args, sql};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::{
    Change, Effects, FollowUp, LaneRef, NewRunRow, StepWrite, Transition, children, lanes,
    run_entry,
};
use crate::domain::time::Ts;
use crate::ids::RunId;

/// Applies `transitions` (and their follow-ups) inside the caller's transaction; returns what
/// must be told after the commit.
pub(crate) async fn apply<C: Conn + ?Sized>(
    conn: &mut C,
    transitions: Vec<Transition>,
    now: Ts,
) -> Result<Effects, StoreError> {
    let mut effects = Effects::default();
    let mut pending = transitions;
    while !pending.is_empty() {
        let mut batch = Batch::default();
        let mut follow_ups = Vec::new();
        for t in pending.drain(..) {
            effects.schedule(t.scheduled());
            effects.merge(t.effects);
            follow_ups.extend(t.follow_ups);
            for change in t.changes {
                batch.add(change);
            }
        }
        batch.write(conn, now).await?;
        for follow_up in follow_ups {
            pending.push(follow_up_transition(conn, follow_up).await?);
        }
    }
    Ok(effects)
}

/// One round of changes, sorted by how they are written.
#[derive(Default)]
struct Batch {
    steps: Vec<StepWrite>,
    ordered: Vec<Change>,
    woken_steps: Vec<Value>,
    started: Vec<Value>,
    runs: Vec<NewRunRow>,
    leases: Vec<(RunId, Ts)>,
    requeues: Vec<Value>,
    statuses: Vec<Value>,
    retries: Vec<Value>,
    finished: Vec<Value>,
    deleted_waits: Vec<Value>,
    deleted_jobs: Vec<Value>,
    history: Vec<NewHistoryEntry>,
}

fn json_text(v: &Option<Value>) -> Value {
    v.as_ref()
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

impl Batch {
    fn add(&mut self, change: Change) {
        match change {
            Change::UpsertStep(step) => self.steps.push(step),
            Change::WakeSleepingSteps { run } => self.woken_steps.push(json!(run)),
            Change::StartRun { run } => self.started.push(json!(run)),
            Change::InsertRun(run) => self.runs.push(run),
            Change::RenewLease { run, until } => self.leases.push((run, until)),
            Change::QueueJob { run, due } => {
                self.requeues
                    .push(json!({"run_id": run, "due_at": due.to_rfc3339()}));
            }
            Change::SetRunStatus { run, status } => {
                self.statuses
                    .push(json!({"id": run, "status": status.as_str()}));
            }
            Change::RetryRun { run, error } => {
                self.retries
                    .push(json!({"id": run, "error": error.to_string()}));
            }
            Change::FinishRun {
                run,
                status,
                output,
                error,
            } => self.finished.push(json!({
                "id": run, "status": status.as_str(),
                "output": json_text(&output), "error": json_text(&error),
            })),
            Change::DeleteWaits { run } => self.deleted_waits.push(json!(run)),
            Change::DeleteJob { run } => self.deleted_jobs.push(json!(run)),
            Change::History(entry) => self.history.push(entry),
            other => self.ordered.push(other),
        }
    }

    /// Only step rows, ended runs, history entries and lease renewals: a batch of checkpoints
    /// and results, the hot path, whose writes go in one round trip (leases in a second, when a
    /// renewal is due).
    fn is_results(&self) -> bool {
        !self.history.is_empty()
            && self.ordered.is_empty()
            && self.woken_steps.is_empty()
            && self.started.is_empty()
            && self.runs.is_empty()
            && self.requeues.is_empty()
            && self.statuses.is_empty()
            && self.retries.is_empty()
    }

    /// Only what dispatching runs writes (their sleeping steps over, their status `running`,
    /// their history; run timeouts one by one): a claim's writes, in one round trip.
    fn is_dispatch(&self) -> bool {
        !self.started.is_empty()
            && self.woken_steps == self.started
            && !self.history.is_empty()
            && self
                .ordered
                .iter()
                .all(|c| matches!(c, Change::SetJobTimeout { .. }))
            && self.steps.is_empty()
            && self.runs.is_empty()
            && self.leases.is_empty()
            && self.requeues.is_empty()
            && self.statuses.is_empty()
            && self.retries.is_empty()
            && self.finished.is_empty()
            && self.deleted_waits.is_empty()
            && self.deleted_jobs.is_empty()
    }

    async fn write<C: Conn + ?Sized>(self, conn: &mut C, now: Ts) -> Result<(), StoreError> {
        if self.is_dispatch() {
            for change in self.ordered {
                write_one(conn, change, now).await?;
            }
            conn.execute(
                sql!("write_dispatch"),
                args![
                    &Value::Array(self.started),
                    now,
                    &history_rows(&self.history)
                ],
            )
            .await?;
            return Ok(());
        }
        if self.is_results() {
            conn.execute(
                sql!("write_results"),
                args![
                    &step_rows(&self.steps),
                    now,
                    &history_rows(&self.history),
                    &Value::Array(self.finished),
                    &Value::Array(self.deleted_waits),
                    &Value::Array(self.deleted_jobs),
                ],
            )
            .await?;
            return write_leases(conn, &self.leases, now).await;
        }
        write_steps(conn, &self.steps, now).await?;
        for change in self.ordered {
            write_one(conn, change, now).await?;
        }
        write_runs(conn, &self.runs, now).await?;
        for (sql, runs) in [
            (sql!("wake_sleeping_steps"), self.woken_steps),
            (sql!("start_runs"), self.started),
        ] {
            if !runs.is_empty() {
                conn.execute(sql, args![&Value::Array(runs), now]).await?;
            }
        }
        write_leases(conn, &self.leases, now).await?;
        if !self.requeues.is_empty() {
            let rows = Value::Array(self.requeues);
            conn.execute(sql!("requeue_jobs"), args![&rows]).await?;
        }
        for (sql, rows) in [
            (sql!("set_run_statuses"), self.statuses),
            (sql!("retry_runs"), self.retries),
            (sql!("finish_runs"), self.finished),
        ] {
            if !rows.is_empty() {
                conn.execute(sql, args![&Value::Array(rows), now]).await?;
            }
        }
        for (sql, ids) in [
            (sql!("delete_waits_many"), self.deleted_waits),
            (sql!("delete_jobs"), self.deleted_jobs),
        ] {
            if !ids.is_empty() {
                conn.execute(sql, args![&Value::Array(ids)]).await?;
            }
        }
        write_history(conn, &self.history, now).await
    }
}

/// Renewed leases in one statement, all to the batch's one instant (the group commit asks for
/// one).
async fn write_leases<C: Conn + ?Sized>(
    conn: &mut C,
    leases: &[(RunId, Ts)],
    now: Ts,
) -> Result<(), StoreError> {
    if leases.is_empty() {
        return Ok(());
    }
    let until = leases.iter().map(|(_, t)| *t).max().unwrap_or(now);
    let runs: Value = leases.iter().map(|(r, _)| json!(r)).collect();
    conn.execute(sql!("checkpoint_leases"), args![&runs, until])
        .await?;
    Ok(())
}

/// Every step row of a batch in one statement.
async fn write_steps<C: Conn + ?Sized>(
    conn: &mut C,
    steps: &[StepWrite],
    now: Ts,
) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    conn.execute(sql!("checkpoint_steps"), args![&step_rows(steps), now])
        .await?;
    Ok(())
}

/// Step rows as the step statements take them; a step written twice keeps its last write.
fn step_rows(steps: &[StepWrite]) -> Value {
    let mut last: HashMap<(RunId, String), usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        last.insert((s.run.clone(), s.step_id.clone()), i);
    }
    steps
        .iter()
        .enumerate()
        .filter(|(i, s)| last.get(&(s.run.clone(), s.step_id.clone())) == Some(i))
        .map(|(_, s)| {
            json!({
                "run_id": s.run, "step_id": s.step_id, "env_id": s.env, "name": s.name,
                "step_type": s.step_type, "sequence": s.sequence, "status": s.status,
                "output": json_text(&s.output), "error": json_text(&s.error), "attempt": s.attempt,
                "started_at": s.started_at.map(Ts::to_rfc3339), "ended_at": s.ended_at.map(Ts::to_rfc3339),
            })
        })
        .collect()
}

/// New runs and their job rows in one round trip.
async fn write_runs<C: Conn + ?Sized>(
    conn: &mut C,
    runs: &[NewRunRow],
    now: Ts,
) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    let rows: Value = runs
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "env_id": r.env, "function_id": r.function_id,
                "function_version": r.function_version, "event_id": r.event_id,
                "status": r.status.as_str(), "input": r.input.to_string(),
                "max_attempts": r.max_attempts, "parent_run_id": r.parent,
                "parent_step_id": r.parent_step,
                "concurrency_key": (r.lane_limit > 0).then_some(r.lane_key.as_str()),
                "job_state": r.job_state.as_str(), "lane_key": r.lane_key,
                "lane_limit": r.lane_limit,
                "not_before": r.not_before.map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    conn.execute(sql!("insert_runs"), args![&rows, now]).await?;
    Ok(())
}

/// Every history entry of a batch in one statement, in order.
pub(crate) async fn write_history<C: Conn + ?Sized>(
    conn: &mut C,
    entries: &[NewHistoryEntry],
    now: Ts,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    conn.execute(sql!("history_many"), args![&history_rows(entries), now])
        .await?;
    Ok(())
}

/// History entries as the history statements take them.
fn history_rows(entries: &[NewHistoryEntry]) -> Value {
    entries
        .iter()
        .map(|e| {
            json!({
                "env_id": e.env_id, "kind": e.kind.as_str(), "run_id": e.run_id,
                "function_id": e.function_id, "event_id": e.event_id, "payload": e.payload.to_string(),
            })
        })
        .collect()
}

/// A change written on its own.
async fn write_one<C: Conn + ?Sized>(
    conn: &mut C,
    change: Change,
    now: Ts,
) -> Result<(), StoreError> {
    match change {
        Change::ResolveStep {
            run,
            env,
            step_id,
            status,
            output,
            error,
        } => {
            let resolved = conn
                .execute(
                    sql!("resolve_step"),
                    args![
                        run.as_str(),
                        step_id.as_str(),
                        status,
                        output.as_ref(),
                        error.as_ref(),
                        now
                    ],
                )
                .await?;
            if resolved > 0 {
                let kind = if status == "completed" {
                    HistoryKind::StepCompleted
                } else {
                    HistoryKind::StepFailed
                };
                let payload = json!({
                    "step_id": step_id, "status": status, "output": output, "error": error,
                    "resolved": true,
                });
                let entry = run_entry(&env, kind, &run, payload);
                write_history(conn, std::slice::from_ref(&entry), now).await?;
            }
        }
        Change::SetJobTimeout { run, at } => {
            conn.execute(sql!("set_job_timeout"), args![run.as_str(), at])
                .await?;
        }
        Change::ParkJob { run, due } => {
            conn.execute(sql!("park_job"), args![run.as_str(), due])
                .await?;
        }
        Change::Resume { run, env, reason } => {
            let state: Option<String> = conn
                .scalar_optional(sql!("wake_job"), args![run.as_str(), now])
                .await?;
            if state.as_deref() == Some("queued") {
                conn.execute(sql!("set_run_status"), args![run.as_str(), "running", now])
                    .await?;
                let entry = run_entry(&env, HistoryKind::RunResumed, &run, reason);
                write_history(conn, std::slice::from_ref(&entry), now).await?;
            }
        }
        Change::Unblock { run } => {
            conn.execute(sql!("unblock_job"), args![run.as_str(), now])
                .await?;
        }
        Change::CancelRun { run, env, reason } => {
            conn.execute(
                sql!("cancel_run"),
                args![env.as_str(), run.as_str(), reason.as_str(), now],
            )
            .await?;
        }
        Change::InsertWait(w) => {
            conn.execute(
                sql!("insert_wait"),
                args![
                    w.run.as_str(),
                    w.step_id.as_str(),
                    w.env.as_str(),
                    w.event_name.as_str(),
                    w.match_path.as_deref(),
                    w.match_value.as_ref(),
                    w.expires_at,
                    now,
                ],
            )
            .await?;
        }
        Change::PauseJob { run, resume, due } => {
            conn.execute(sql!("pause_job"), args![run.as_str(), resume.as_str(), due])
                .await?;
        }
        Change::MarkPaused { run, reason, error } => {
            conn.execute(
                sql!("mark_paused"),
                args![run.as_str(), reason.as_str(), error.as_ref(), now],
            )
            .await?;
        }
        Change::RequestPause { run, requested } => {
            conn.execute(sql!("request_pause"), args![run.as_str(), requested, now])
                .await?;
        }
        Change::UnpauseJob { run, now_due } => {
            conn.execute(sql!("unpause_job"), args![run.as_str(), now_due, now])
                .await?;
        }
        Change::ClearPause { run, from_step } => {
            conn.execute(
                sql!("clear_pause"),
                args![run.as_str(), from_step.as_deref(), now],
            )
            .await?;
        }
        Change::ResetSteps { run, from_sequence } => {
            conn.execute(sql!("reset_steps"), args![run.as_str(), from_sequence])
                .await?;
            conn.execute(sql!("reset_waits"), args![run.as_str()])
                .await?;
        }
        Change::ReviveRun {
            run,
            lane,
            admitted,
            from_step,
        } => {
            let (state, status) = if admitted {
                ("queued", "running")
            } else {
                ("blocked", "waiting_for_capacity")
            };
            let (key, limit) = lane.map_or((String::new(), 0), |l| (l.key, l.limit));
            conn.execute(
                sql!("revive_job"),
                args![run.as_str(), state, now, key.as_str(), limit],
            )
            .await?;
            conn.execute(
                sql!("revive_run"),
                args![run.as_str(), status, from_step.as_deref(), now],
            )
            .await?;
        }
        Change::EditStep {
            run,
            step_id,
            output,
            injected,
            actor,
        } => {
            conn.execute(
                sql!("edit_step"),
                args![
                    run.as_str(),
                    step_id.as_str(),
                    &output,
                    injected,
                    actor.as_str(),
                    now
                ],
            )
            .await?;
        }
        // The set-wise kinds never reach here (see `Batch::add`); written one by one if so.
        other => {
            let mut batch = Batch::default();
            batch.add(other);
            Box::pin(batch.write(conn, now)).await?;
        }
    }
    Ok(())
}

/// Reads what a follow-up needs and decides it.
async fn follow_up_transition<C: Conn + ?Sized>(
    conn: &mut C,
    follow_up: FollowUp,
) -> Result<Transition, StoreError> {
    match follow_up {
        FollowUp::ResumeParent {
            env,
            parent,
            child,
            resolution,
        } => {
            // The parent's job row before the lane lock: job rows first, then lanes.
            conn.execute(sql!("lock_run_job"), args![parent.run.as_str()])
                .await?;
            Ok(children::resume_parent(&env, &parent, &child, &resolution))
        }
        FollowUp::PromoteLane(lane) => {
            let active = lock_lane(conn, &lane).await?;
            let free = lanes::free_slots(&lane, active);
            if free == 0 {
                return Ok(Transition::default());
            }
            let blocked: Vec<String> = conn
                .scalars(
                    sql!("blocked_in_lane"),
                    args![
                        lane.env.as_str(),
                        lane.function_id.as_str(),
                        lane.key.as_str(),
                        free
                    ],
                )
                .await?;
            let blocked: Vec<RunId> = blocked.into_iter().map(RunId::from_stored).collect();
            Ok(lanes::promote(&lane, active, &blocked))
        }
    }
}

/// Takes the lane's lock (serialising admission to it across nodes) and counts its admitted
/// runs.
pub(crate) async fn lock_lane<C: Conn + ?Sized>(
    conn: &mut C,
    lane: &LaneRef,
) -> Result<i64, StoreError> {
    let name = format!("{}/{}/{}", lane.env, lane.function_id, lane.key);
    conn.execute(sql!("lock_lane"), args![name.as_str()])
        .await?;
    conn.scalar(
        sql!("count_lane_active"),
        args![
            lane.env.as_str(),
            lane.function_id.as_str(),
            lane.key.as_str()
        ],
    )
    .await
}
