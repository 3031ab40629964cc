//! Run control by a person: pause (at once, or at the running dispatch's next step boundary),
//! resume (optionally from a step, also for a failed run), and the edits of a stopped run's
//! steps (inject into a paused run, patch a failed or completed step). Every one of them is a
//! new history entry naming who did it, why, and what changed.

use serde_json::{Value, json};

use super::{Change, JobFacts, JobState, LaneRef, RunFacts, Transition, run_entry};
use crate::domain::history::HistoryKind;
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;

/// `pause_reason` of a run a person paused (the SDK's name: it waits for an injection).
pub const PAUSED_BY_REQUEST: &str = "injection";
/// `pause_reason` of a run whose attempts ran out under `on_exhausted = "pause"`.
pub const PAUSED_RETRIES_EXHAUSTED: &str = "retries_exhausted";

/// Who asked for a change, and why (written into its history entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The API key's id.
    pub key_id: String,
    pub reason: String,
}

impl Actor {
    fn json(&self) -> Value {
        json!({"actor_id": self.key_id, "reason": self.reason})
    }
}

/// Where a pause leaves the job and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseAt {
    /// Where a resume puts the job back.
    pub resume: JobState,
    /// The job's due instant then (a sleep's or a wait's deadline; a retry's backoff).
    pub due: Ts,
    pub reason: &'static str,
    /// The error that stopped it (retries exhausted).
    pub error: Option<Value>,
}

/// The run pauses now: its job is neither claimable nor timed (its run timeout is dropped and
/// counts again from the next dispatch), its status is `paused`.
pub fn pause_now(run: &RunFacts, at: PauseAt, detail: &Value) -> Transition {
    let mut t = Transition::default();
    t.push(Change::PauseJob {
        run: run.id.clone(),
        resume: at.resume,
        due: at.due,
    });
    t.push(Change::MarkPaused {
        run: run.id.clone(),
        reason: at.reason.to_owned(),
        error: at.error.clone(),
    });
    let mut payload = json!({
        "from": run.status.as_str(), "reason": at.reason, "resume_state": at.resume.as_str(),
        "error": at.error,
    });
    merge(&mut payload, detail);
    t.history(run_entry(
        &run.env,
        HistoryKind::RunPaused,
        &run.id,
        payload,
    ));
    t
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// What a pause request does.
#[derive(Debug, Clone, PartialEq)]
pub enum PauseDecision {
    /// Paused at once (the run was not running a dispatch).
    Paused(Transition),
    /// A worker is running it: it pauses at its next step boundary.
    Requested(Transition),
    /// Nothing to do: it is paused already, or the request is pending.
    Unchanged { requested: bool },
    /// A run that ended cannot pause.
    Ended(RunStatus),
}

pub fn pause(run: &RunFacts, job: Option<&JobFacts>, actor: &Actor) -> PauseDecision {
    if run.status.is_terminal() {
        return PauseDecision::Ended(run.status);
    }
    let Some(job) = job else {
        return PauseDecision::Ended(run.status);
    };
    match job.state {
        JobState::Paused => PauseDecision::Unchanged { requested: false },
        JobState::Leased if run.pause_requested => PauseDecision::Unchanged { requested: true },
        JobState::Leased => {
            let mut t = Transition::default();
            t.push(Change::RequestPause {
                run: run.id.clone(),
                requested: true,
            });
            t.history(run_entry(
                &run.env,
                HistoryKind::RunPauseRequested,
                &run.id,
                actor.json(),
            ));
            PauseDecision::Requested(t)
        }
        resume @ (JobState::Queued | JobState::Parked | JobState::Blocked) => {
            PauseDecision::Paused(pause_now(
                run,
                PauseAt {
                    resume,
                    due: job.due_at,
                    reason: PAUSED_BY_REQUEST,
                    error: None,
                },
                &actor.json(),
            ))
        }
    }
}

/// A report's transition when the run was asked to pause: unless the report ended the run, the
/// dispatch stops at this boundary — its steps are recorded, and where the job would have gone
/// next (the queue, a park for a sleep, wait or child) becomes where a resume puts it. Returns
/// the transition and whether it paused the run.
pub fn pause_at_boundary(run: &RunFacts, t: Transition, now: Ts) -> (Transition, bool) {
    let ends = t
        .changes
        .iter()
        .any(|c| matches!(c, Change::FinishRun { .. } | Change::DeleteJob { .. }));
    if !run.pause_requested {
        return (t, false);
    }
    if ends {
        // The handler finished before reaching a boundary the server saw: the run ends as
        // reported, and the request is void.
        let mut t = t;
        t.push(Change::RequestPause {
            run: run.id.clone(),
            requested: false,
        });
        return (t, false);
    }
    let mut at = PauseAt {
        resume: JobState::Queued,
        due: now,
        reason: PAUSED_BY_REQUEST,
        error: None,
    };
    let mut kept = Transition {
        changes: Vec::with_capacity(t.changes.len() + 3),
        follow_ups: t.follow_ups,
        effects: t.effects,
    };
    for change in t.changes {
        match change {
            Change::QueueJob { run: r, due } if r == run.id => at.due = due,
            Change::ParkJob { run: r, due } if r == run.id => {
                at.resume = JobState::Parked;
                at.due = due;
            }
            Change::RenewLease { run: ref r, .. } if *r == run.id => {}
            Change::SetRunStatus { run: ref r, .. } if *r == run.id => {}
            Change::RetryRun { run: r, error } if r == run.id => {
                // The failed attempt still counts; its error is what the paused run shows.
                kept.push(Change::RetryRun {
                    run: r,
                    error: error.clone(),
                });
                at.error = Some(error);
            }
            other => kept.push(other),
        }
    }
    kept.extend(pause_now(run, at, &json!({"at_step_boundary": true})));
    (kept, true)
}

/// How a resume goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeFacts<'a> {
    pub run: &'a RunFacts,
    pub job: Option<&'a JobFacts>,
    /// The step to resume from (found by the store), with the sequence it sits at.
    pub from_step: Option<(String, i32)>,
    /// For a failed run: its function's lane now, and the lane's active count.
    pub lane: Option<(LaneRef, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResumeDecision {
    Apply(Transition),
    /// A pending pause request withdrawn: the run goes on as it was.
    RequestWithdrawn(Transition),
    /// Not paused and not failed: nothing to resume.
    NotResumable(RunStatus),
}

pub fn resume(facts: &ResumeFacts<'_>, actor: &Actor) -> ResumeDecision {
    let run = facts.run;
    let mut t = Transition::default();
    let mut payload = actor.json();
    payload["from"] = json!(run.status.as_str());
    if let Some((step, sequence)) = &facts.from_step {
        t.push(Change::ResetSteps {
            run: run.id.clone(),
            from_sequence: *sequence,
        });
        t.history(run_entry(
            &run.env,
            HistoryKind::StepsReset,
            &run.id,
            json!({"from_step": step, "from_sequence": sequence, "actor_id": actor.key_id, "reason": actor.reason}),
        ));
        payload["from_step"] = json!(step);
    }
    let from_step = facts.from_step.as_ref().map(|(s, _)| s.clone());
    match (run.status, facts.job) {
        (RunStatus::Paused, Some(job)) if job.state == JobState::Paused => {
            t.push(Change::UnpauseJob {
                run: run.id.clone(),
                now_due: facts.from_step.is_some(),
            });
            t.push(Change::ClearPause {
                run: run.id.clone(),
                from_step,
            });
            t.effects.work_ready = true;
            if let Some(lane) = job.lane.clone() {
                // Back to `blocked` when it was: admitted when its lane has room.
                t.follow_ups.push(super::FollowUp::PromoteLane(lane));
            }
            t.history(run_entry(
                &run.env,
                HistoryKind::RunUnpaused,
                &run.id,
                payload,
            ));
            ResumeDecision::Apply(t)
        }
        (_, Some(job)) if job.state == JobState::Leased && run.pause_requested => {
            let mut t = Transition::default();
            t.push(Change::RequestPause {
                run: run.id.clone(),
                requested: false,
            });
            t.history(run_entry(
                &run.env,
                HistoryKind::RunUnpaused,
                &run.id,
                payload,
            ));
            ResumeDecision::RequestWithdrawn(t)
        }
        (RunStatus::Failed, None) => {
            let admitted = super::create::admits(
                facts.lane.as_ref().map(|(l, _)| l),
                facts.lane.as_ref().map_or(0, |(_, active)| *active),
            );
            t.push(Change::ReviveRun {
                run: run.id.clone(),
                lane: facts.lane.as_ref().map(|(l, _)| l.clone()),
                admitted,
                from_step,
            });
            t.effects.work_ready = admitted;
            t.history(run_entry(
                &run.env,
                HistoryKind::RunUnpaused,
                &run.id,
                payload,
            ));
            ResumeDecision::Apply(t)
        }
        (status, _) => ResumeDecision::NotResumable(status),
    }
}

/// A step as an edit finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFacts {
    pub step_id: String,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
}

/// Which edit of a step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEdit {
    /// `InjectStepOutput`: a paused run's step, memoized with the new value when it resumes.
    Inject,
    /// `PatchStep`: a failed or completed step of a run that no worker is running.
    Patch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EditDecision {
    Apply {
        transition: Transition,
        previous_output: Option<Value>,
    },
    /// The edit is not allowed in the run's (or the step's) state; the message says why.
    Refused(String),
}

/// The SHA-256 of a JSON value's text, hex (how edits and redactions name a value they replace).
pub fn value_hash(value: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(value.to_string().as_bytes()))
}

pub fn edit_step(
    run: &RunFacts,
    job: Option<&JobFacts>,
    step: &StepFacts,
    edit: StepEdit,
    output: Value,
    actor: &Actor,
) -> EditDecision {
    let leased = job.is_some_and(|j| j.state == JobState::Leased);
    match edit {
        StepEdit::Inject if run.status != RunStatus::Paused => {
            return EditDecision::Refused(format!(
                "run '{}' is {}; InjectStepOutput needs a paused run (PauseRun first)",
                run.id, run.status
            ));
        }
        StepEdit::Patch if leased => {
            return EditDecision::Refused(format!(
                "run '{}' is running on a worker; pause it before patching its steps",
                run.id
            ));
        }
        _ => {}
    }
    if !matches!(step.status.as_str(), "completed" | "failed") {
        return EditDecision::Refused(format!(
            "step '{}' is {}; only completed or failed steps can be edited",
            step.step_id, step.status
        ));
    }
    if crate::domain::redaction::is_redacted(step.output.as_ref()) {
        return EditDecision::Refused(format!(
            "step '{}' is redacted; a redacted step cannot be edited",
            step.step_id
        ));
    }
    let (kind, injected) = match edit {
        StepEdit::Inject => (HistoryKind::StepInjected, true),
        StepEdit::Patch => (HistoryKind::StepPatched, false),
    };
    let mut t = Transition::default();
    t.push(Change::EditStep {
        run: run.id.clone(),
        step_id: step.step_id.clone(),
        output: output.clone(),
        injected,
        actor: actor.key_id.clone(),
    });
    let payload = json!({
        "step_id": step.step_id,
        "output": output,
        "previous_status": step.status,
        "previous_output": step.output,
        "previous_output_sha256": step.output.as_ref().map(value_hash),
        "previous_error": step.error,
        "actor_id": actor.key_id,
        "reason": actor.reason,
    });
    t.history(run_entry(&run.env, kind, &run.id, payload));
    EditDecision::Apply {
        transition: t,
        previous_output: step.output.clone(),
    }
}
