//! A worker's report on its dispatch (a checkpoint or the result): refused unless its fence
//! holds; otherwise the steps it ran are recorded and the outcome decides what the run does
//! next — goes on, ends, is retried after a backoff, or parks for a sleep, an event or a child.

use serde_json::Value;

use super::children::{ChildRequest, unknown_function_error};
use super::create::{RunSpec, create_run};
use super::timer::{after_failure, failed_attempt};
use super::{
    Change, JobFacts, JobState, LaneRef, NewWait, RunFacts, StepWrite, Transition, end_run,
    run_entry,
};
use crate::domain::function::RetryPolicy;
use crate::domain::history::HistoryKind;
use crate::domain::job::{
    Fence, JobReport, ReportOutcome, ReportedStep, YieldRequest, lookup_path, step_name,
};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{FunctionId, RunId};

/// Whether a fence names the job's current dispatch and comes from the environment and the
/// worker it was leased to.
pub fn fence_holds(job: &JobFacts, fence: &Fence) -> bool {
    job.state == JobState::Leased
        && job.execution_seq == fence.execution_seq
        && job.lease_token.as_deref() == Some(fence.lease_token.as_str())
        && job.worker_id.as_deref() == Some(fence.worker_id.as_str())
        && job.env == fence.env_id
}

/// The lease a checkpoint leaves alone: one that ends more than two thirds of the TTL away
/// (`lease_until - now` being the TTL). Renewing moves an indexed column, so most checkpoints
/// skip it.
pub fn renewal_threshold(now: Ts, lease_until: Ts) -> Ts {
    let ttl = lease_until.0 - now.0;
    Ts(now.0 + ttl * 2 / 3)
}

/// A function an `invoke` yield names, as the store found it (with the child's lane and the
/// lane's active count read under the lane's lock).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildFunction {
    pub function_id: FunctionId,
    pub version: i32,
    pub max_attempts: i32,
    pub lane: Option<LaneRef>,
    pub lane_active: i64,
}

/// What the store read for a report.
#[derive(Debug, Clone)]
pub struct ReportFacts<'a> {
    pub run: &'a RunFacts,
    pub job: &'a JobFacts,
    pub policy: Option<&'a RetryPolicy>,
    /// For an `invoke` / `invoke_async` yield: the function, `None` when it does not exist.
    pub child_function: Option<ChildFunction>,
    /// For an `invoke` / `invoke_async` yield: the child's id, drawn by the store.
    pub child_id: Option<RunId>,
}

/// The report's effect.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportDecision {
    /// The fence does not hold: nothing is written, the worker is told it is stale.
    Stale,
    Apply(Transition),
    /// A checkpoint of a run asked to pause: its steps are recorded and the run paused; the
    /// worker is told its dispatch is over (as for a stale fence), so it stops the handler.
    Paused(Transition),
}

/// The step rows and history entries of the steps a report carries, at `offset` onwards.
pub fn step_writes(run: &RunFacts, steps: &[ReportedStep], offset: i64) -> Transition {
    let mut t = Transition::default();
    for (i, step) in steps.iter().enumerate() {
        let sequence = i32::try_from(offset + i as i64).unwrap_or(i32::MAX);
        t.push(Change::UpsertStep(StepWrite {
            run: run.id.clone(),
            env: run.env.clone(),
            step_id: step.id.clone(),
            name: step.name.clone(),
            step_type: step.step_type.clone(),
            sequence,
            status: if step.completed {
                "completed"
            } else {
                "failed"
            },
            output: step.output.clone(),
            error: step.error.clone(),
            attempt: run.attempt,
            started_at: step.started_at,
            ended_at: step.ended_at,
        }));
        let kind = if step.completed {
            HistoryKind::StepCompleted
        } else {
            HistoryKind::StepFailed
        };
        let payload = serde_json::json!({
            "step_id": step.id, "name": step.name, "type": step.step_type, "attempt": run.attempt,
            "sequence": sequence, "output": step.output, "error": step.error,
            "compensation_for": step.compensation_for,
            "started_at": step.started_at.map(Ts::to_rfc3339),
            "ended_at": step.ended_at.map(Ts::to_rfc3339),
        });
        t.history(run_entry(&run.env, kind, &run.id, payload));
    }
    t
}

/// Decides a report. `lease_until` is where a checkpoint moves the lease.
pub fn decide(
    facts: &ReportFacts<'_>,
    report: &JobReport,
    lease_until: Ts,
    now: Ts,
) -> ReportDecision {
    if !fence_holds(facts.job, &report.fence) {
        return ReportDecision::Stale;
    }
    let run = facts.run;
    let lane = facts.job.lane.as_ref();
    let mut t = step_writes(run, &report.steps, report.step_offset);
    match &report.outcome {
        ReportOutcome::Progress => {
            let stale_soon = facts
                .job
                .lease_expires_at
                .is_none_or(|l| l < renewal_threshold(now, lease_until));
            if stale_soon {
                t.push(Change::RenewLease {
                    run: run.id.clone(),
                    until: lease_until,
                });
            }
        }
        ReportOutcome::Completed { output } => {
            t.extend(end_run(
                run,
                lane,
                RunStatus::Completed,
                Some(output.clone()),
                None,
            ));
        }
        ReportOutcome::Failed(failure) => {
            let next = after_failure(
                facts.policy,
                failure.retryable,
                run.attempt,
                run.max_attempts,
                failure.retry_after_ms,
            );
            t.extend(failed_attempt(run, lane, failure.to_json(), next, now));
        }
        ReportOutcome::Yielded(request) => {
            let position = report.step_offset + report.steps.len() as i64;
            t.extend(yielded(facts, request, position, now));
        }
    }
    let (t, paused) = super::control::pause_at_boundary(run, t, now);
    if paused && matches!(report.outcome, ReportOutcome::Progress) {
        ReportDecision::Paused(t)
    } else {
        ReportDecision::Apply(t)
    }
}

/// The step a yield records: its id and type, its status, and (for one that ends at once) its
/// output and end.
struct YieldStep<'a> {
    step_id: &'a str,
    step_type: &'a str,
    status: &'static str,
    output: Option<Value>,
    ended: Option<Ts>,
}

impl YieldStep<'_> {
    /// The row at `position` in the run.
    fn write(self, run: &RunFacts, position: i64, now: Ts) -> Change {
        Change::UpsertStep(StepWrite {
            run: run.id.clone(),
            env: run.env.clone(),
            step_id: self.step_id.to_owned(),
            name: step_name(run.id.as_str(), self.step_id),
            step_type: self.step_type.to_owned(),
            sequence: i32::try_from(position).unwrap_or(i32::MAX),
            status: self.status,
            output: self.output,
            error: None,
            attempt: run.attempt,
            started_at: Some(now),
            ended_at: self.ended,
        })
    }
}

/// A yield: records its step and parks or requeues the run.
fn yielded(facts: &ReportFacts<'_>, request: &YieldRequest, position: i64, now: Ts) -> Transition {
    let run = facts.run;
    let mut t = Transition::default();
    let mut payload;
    match request {
        YieldRequest::Sleep { step_id, until } => {
            t.push(
                YieldStep {
                    step_id,
                    step_type: "sleep",
                    status: "sleeping",
                    output: None,
                    ended: None,
                }
                .write(run, position, now),
            );
            t.push(Change::QueueJob {
                run: run.id.clone(),
                due: *until,
            });
            t.effects.work_ready = true;
            payload = serde_json::json!({"type": "sleep", "step_id": step_id, "until": until.to_rfc3339()});
        }
        YieldRequest::WaitForEvent {
            step_id,
            event,
            match_path,
            match_value,
            timeout,
        } => {
            let expires = now.plus(*timeout);
            let expected = match (match_value, match_path) {
                (Some(v), _) => Some(Value::String(v.clone())),
                (None, Some(path)) => {
                    let trigger = serde_json::json!({"data": run.input});
                    Some(lookup_path(&trigger, path).cloned().unwrap_or(Value::Null))
                }
                (None, None) => None,
            };
            t.push(
                YieldStep {
                    step_id,
                    step_type: "wait_for_event",
                    status: "waiting",
                    output: None,
                    ended: None,
                }
                .write(run, position, now),
            );
            t.push(Change::InsertWait(NewWait {
                run: run.id.clone(),
                env: run.env.clone(),
                step_id: step_id.clone(),
                event_name: event.clone(),
                match_path: match_path.clone(),
                match_value: expected,
                expires_at: expires,
            }));
            t.push(Change::ParkJob {
                run: run.id.clone(),
                due: expires,
            });
            payload = serde_json::json!({"type": "wait_for_event", "step_id": step_id, "event": event, "match": match_path, "expires_at": expires.to_rfc3339()});
        }
        YieldRequest::Invoke {
            step_id,
            function_id,
            input,
            timeout,
        } => {
            let child = facts.child_id.clone().unwrap_or_else(RunId::generate);
            match &facts.child_function {
                Some(function) => {
                    t.extend(child_run(facts, function, &child, Some(step_id), input));
                    t.push(
                        YieldStep {
                            step_id,
                            step_type: "invoke_function",
                            status: "waiting",
                            output: None,
                            ended: None,
                        }
                        .write(run, position, now),
                    );
                    t.push(Change::ParkJob {
                        run: run.id.clone(),
                        due: now.plus(*timeout),
                    });
                }
                None => {
                    for change in unknown_function_invoke(run, step_id, function_id, position, now)
                    {
                        t.push(change);
                    }
                    t.push(Change::QueueJob {
                        run: run.id.clone(),
                        due: now,
                    });
                    t.effects.work_ready = true;
                }
            }
            payload = serde_json::json!({"type": "invoke_function", "step_id": step_id, "function_id": function_id, "child_run_id": child.to_string()});
        }
        YieldRequest::InvokeAsync {
            step_id,
            function_id,
            input,
        } => {
            let child = facts.child_id.clone().unwrap_or_else(RunId::generate);
            match &facts.child_function {
                Some(function) => {
                    t.extend(child_run(facts, function, &child, None, input));
                    let out = serde_json::json!({"run_id": child.to_string()});
                    t.push(
                        YieldStep {
                            step_id,
                            step_type: "invoke_function",
                            status: "completed",
                            output: Some(out),
                            ended: Some(now),
                        }
                        .write(run, position, now),
                    );
                }
                None => {
                    for change in unknown_function_invoke(run, step_id, function_id, position, now)
                    {
                        t.push(change);
                    }
                }
            }
            t.push(Change::QueueJob {
                run: run.id.clone(),
                due: now,
            });
            t.effects.work_ready = true;
            payload = serde_json::json!({"type": "invoke_function_async", "step_id": step_id, "function_id": function_id, "child_run_id": child.to_string()});
        }
    }
    // A sleep, or a yield that made nothing claimable, leaves the run waiting.
    if !t.effects.work_ready || matches!(request, YieldRequest::Sleep { .. }) {
        t.push(Change::SetRunStatus {
            run: run.id.clone(),
            status: RunStatus::Waiting,
        });
    }
    payload["sequence"] = serde_json::json!(position);
    t.history(run_entry(
        &run.env,
        HistoryKind::RunYielded,
        &run.id,
        payload,
    ));
    t
}

/// An invoke (waiting or not) of a function that is not registered: its step is written as
/// failed and resolved with the unknown-function error, for the resumed handler to see.
fn unknown_function_invoke(
    run: &RunFacts,
    step_id: &str,
    function_id: &str,
    position: i64,
    now: Ts,
) -> [Change; 2] {
    let step = YieldStep {
        step_id,
        step_type: "invoke_function",
        status: "failed",
        output: None,
        ended: Some(now),
    };
    [
        step.write(run, position, now),
        Change::ResolveStep {
            run: run.id.clone(),
            env: run.env.clone(),
            step_id: step_id.to_owned(),
            status: "failed",
            output: None,
            error: Some(unknown_function_error(function_id)),
        },
    ]
}

/// The child run of an invoke.
fn child_run(
    facts: &ReportFacts<'_>,
    function: &ChildFunction,
    child: &RunId,
    waiting_step: Option<&String>,
    input: &Value,
) -> Transition {
    let spec = RunSpec {
        id: child.clone(),
        env: facts.run.env.clone(),
        function_id: function.function_id.clone(),
        function_version: function.version,
        event_id: None,
        event_name: String::new(),
        input: input.clone(),
        max_attempts: function.max_attempts,
        parent: Some(facts.run.id.clone()),
        parent_step: waiting_step.cloned(),
        lane: function.lane.clone(),
        not_before: None,
    };
    create_run(&spec, function.lane.as_ref().map(|_| function.lane_active))
}

/// What a yield of an invoke asks the store to look up before deciding.
pub fn child_lookup(run: &RunFacts, report: &JobReport) -> Option<ChildRequest> {
    let ReportOutcome::Yielded(request) = &report.outcome else {
        return None;
    };
    let (waiting_step, function_id, input, timeout) = match request {
        YieldRequest::Invoke {
            step_id,
            function_id,
            input,
            timeout,
        } => (Some(step_id.clone()), function_id, input, Some(*timeout)),
        YieldRequest::InvokeAsync {
            function_id, input, ..
        } => (None, function_id, input, None),
        _ => return None,
    };
    Some(ChildRequest {
        parent: run.id.clone(),
        env: run.env.clone(),
        waiting_step,
        function_id: function_id.clone(),
        input: input.clone(),
        child: RunId::generate(),
        timeout,
    })
}
