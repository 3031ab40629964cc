//! The run lifecycle as pure decisions. Given the facts the store read under its row locks
//! (the run, its job, the function's policy) and an input (a worker's report, a timer, a
//! cancel, an event, a child that ended), each decision returns a [`Transition`]: the row
//! changes in order, their history entries, what other parts of the system must be told, and
//! the follow-ups that need more facts (a lane's blocked runs, a child function). The store
//! reads, calls the decision, applies the transition and commits; nothing here touches a
//! database, so every rule has table-driven unit tests and a property test of the invariants
//! (`tests.rs`).
//!
//! The transitions: [`claim`] (a dispatch starts), [`report`] (checkpoints, results, retries,
//! yields), [`timer`] (run timeouts, expired leases, parked deadlines), [`cancel`], [`create`]
//! (new runs and lane admission), [`lanes`] (promotion when a slot frees), [`waits`] (an event
//! satisfying waits) and [`children`] (a parent resumed when its child ends).

pub mod cancel;
pub mod children;
pub mod claim;
pub mod control;
pub mod create;
pub mod lanes;
pub mod report;
pub mod timer;
pub mod waits;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

/// What the store read of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub id: RunId,
    pub env: EnvId,
    pub function_id: FunctionId,
    pub status: RunStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    /// The data the run was started with (the triggering event's `data`, or the invoke input).
    pub input: Value,
    /// The parent's step that waits for this run (`invoke`); `None` for `invoke_async` and
    /// for runs started by events.
    pub parent: Option<ParentLink>,
    /// A person asked the running dispatch to pause at its next step boundary.
    pub pause_requested: bool,
    pub created_at: Ts,
}

/// A parent run's step waiting on a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    pub run: RunId,
    pub step_id: String,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Claimable from `due_at`.
    Queued,
    /// Held by a worker until `lease_expires_at`.
    Leased,
    /// Waiting for an event or a child, with a deadline at `due_at`.
    Parked,
    /// Over its concurrency lane's limit.
    Blocked,
    /// Held by a person (or by `on_exhausted = "pause"`): neither claimable nor timed until a
    /// resume puts it back where it was.
    Paused,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Parked => "parked",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "leased" => Self::Leased,
            "parked" => Self::Parked,
            "blocked" => Self::Blocked,
            "paused" => Self::Paused,
            _ => return None,
        })
    }
}

/// A concurrency lane a run belongs to: at most `limit` active runs per (function, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneRef {
    pub env: EnvId,
    pub function_id: FunctionId,
    pub key: String,
    pub limit: i32,
}

/// What the store read of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFacts {
    pub run: RunId,
    pub env: EnvId,
    pub state: JobState,
    pub execution_seq: i64,
    pub lease_token: Option<String>,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Ts>,
    pub due_at: Ts,
    pub timeout_at: Option<Ts>,
    /// Set when the function has a concurrency limit.
    pub lane: Option<LaneRef>,
}

/// A step written as the worker reported it, or as a yield records it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWrite {
    pub run: RunId,
    pub env: EnvId,
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i32,
    pub status: &'static str,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i32,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
}

/// A wait for an event, recorded by a `wait_for_event` yield.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWait {
    pub run: RunId,
    pub env: EnvId,
    pub step_id: String,
    pub event_name: String,
    pub match_path: Option<String>,
    /// The value the awaited event's `match_path` must have.
    pub match_value: Option<Value>,
    pub expires_at: Ts,
}

/// A run to insert, with its job.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRunRow {
    pub id: RunId,
    pub env: EnvId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub event_id: Option<EventId>,
    pub status: RunStatus,
    pub input: Value,
    pub max_attempts: i32,
    pub parent: Option<RunId>,
    pub parent_step: Option<String>,
    /// `queued` (admitted) or `blocked` (over its lane's limit).
    pub job_state: JobState,
    pub lane_key: String,
    pub lane_limit: i32,
    /// A throttled run's start: its job is claimable from then, not at once.
    pub not_before: Option<Ts>,
}

/// One row change. The store applies each with one statement (or several of a kind with one
/// set-wise statement), in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    UpsertStep(StepWrite),
    /// A waiting or sleeping step ends (an event arrived, a child ended, a deadline passed).
    /// Written with its history entry (`step.completed` / `step.failed`, `resolved: true`).
    ResolveStep {
        run: RunId,
        env: EnvId,
        step_id: String,
        status: &'static str,
        output: Option<Value>,
        error: Option<Value>,
    },
    /// Sleeping steps of a run that is dispatched again are over.
    WakeSleepingSteps {
        run: RunId,
    },
    /// The run's status becomes `running`; `started_at` is set on the first dispatch.
    StartRun {
        run: RunId,
    },
    /// The run timeout counts from the first dispatch (kept when already set).
    SetJobTimeout {
        run: RunId,
        at: Ts,
    },
    /// The lease moves to `until`.
    RenewLease {
        run: RunId,
        until: Ts,
    },
    /// The job is claimable again from `due`, its lease dropped.
    QueueJob {
        run: RunId,
        due: Ts,
    },
    /// The job waits (an event, a child) with a deadline at `due`.
    ParkJob {
        run: RunId,
        due: Ts,
    },
    /// A parked job is claimable now, its run `running` again and a `run.resumed` entry with
    /// `reason` written — only if the job is still parked (not ended, not cancelled).
    Resume {
        run: RunId,
        env: EnvId,
        reason: Value,
    },
    /// A blocked job is admitted.
    Unblock {
        run: RunId,
    },
    DeleteJob {
        run: RunId,
    },
    SetRunStatus {
        run: RunId,
        status: RunStatus,
    },
    /// A failed attempt that will be retried: the attempt number goes up, the error is kept.
    RetryRun {
        run: RunId,
        error: Value,
    },
    FinishRun {
        run: RunId,
        status: RunStatus,
        output: Option<Value>,
        error: Option<Value>,
    },
    CancelRun {
        run: RunId,
        env: EnvId,
        reason: String,
    },
    InsertWait(NewWait),
    DeleteWaits {
        run: RunId,
    },
    InsertRun(NewRunRow),
    History(NewHistoryEntry),
    /// The job is held: not claimable, no timer, its lease and run timeout dropped; `resume`
    /// and `due` are where a resume puts it back.
    PauseJob {
        run: RunId,
        resume: JobState,
        due: Ts,
    },
    /// The run's status becomes `paused` with its reason (and the error that stopped it).
    MarkPaused {
        run: RunId,
        reason: String,
        error: Option<Value>,
    },
    /// Sets or withdraws a pause request for the running dispatch.
    RequestPause {
        run: RunId,
        requested: bool,
    },
    /// A paused job goes back where it was (due now when `now_due`: steps were reset).
    UnpauseJob {
        run: RunId,
        now_due: bool,
    },
    /// The run's pause is over: its status follows its job again.
    ClearPause {
        run: RunId,
        from_step: Option<String>,
    },
    /// The run's steps from this sequence on are dropped, to run again.
    ResetSteps {
        run: RunId,
        from_sequence: i32,
    },
    /// A failed run runs again: its job is recreated (queued, or blocked when its lane is
    /// full), its end cleared.
    ReviveRun {
        run: RunId,
        lane: Option<LaneRef>,
        admitted: bool,
        from_step: Option<String>,
    },
    /// A step's output replaced by a person; the first recorded output is kept as the original.
    EditStep {
        run: RunId,
        step_id: String,
        output: Value,
        injected: bool,
        actor: String,
    },
}

/// A follow-up the store resolves after applying a transition's changes, with facts it reads
/// then (its own decision follows).
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// A lane slot was freed: admit the oldest blocked runs up to the limit.
    PromoteLane(LaneRef),
    /// A child ended: resolve the parent's waiting step and wake the parent.
    ResumeParent {
        env: EnvId,
        parent: ParentLink,
        child: RunId,
        resolution: children::StepResolution,
    },
}

/// A run that reached a terminal status in the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedRun {
    pub env: EnvId,
    pub function_id: FunctionId,
    pub status: RunStatus,
    pub created_at: Ts,
}

/// What must be told after the commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// New work became claimable (wake dispatchers).
    pub work_ready: bool,
    /// Runs that reached a terminal status (wake sync waiters).
    pub finished_runs: Vec<RunId>,
    /// The same runs' function, status and creation (for the run-duration histogram).
    pub ended_runs: Vec<EndedRun>,
    /// Topic messages and events stored (for live fan-out on other nodes).
    pub stored: Vec<(crate::domain::lifecycle::StoredKind, i64)>,
    /// The earliest instant this commit set for something to come due (a retry's delay, a
    /// sleep's or wait's deadline, a lease's end, a run's timeout): the timer plans with it
    /// instead of reading the queue again.
    pub scheduled: Option<Ts>,
}

/// What kind of durable message a sequence number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    Topic,
    Event,
}

impl Effects {
    pub fn merge(&mut self, other: Effects) {
        self.work_ready |= other.work_ready;
        self.finished_runs.extend(other.finished_runs);
        self.ended_runs.extend(other.ended_runs);
        self.stored.extend(other.stored);
        self.schedule(other.scheduled);
    }

    /// Notes an instant something comes due (the earliest one is kept).
    pub fn schedule(&mut self, at: Option<Ts>) {
        self.scheduled = match (self.scheduled, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A decision's result: changes in order, follow-ups, effects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    pub changes: Vec<Change>,
    pub follow_ups: Vec<FollowUp>,
    pub effects: Effects,
}

impl Transition {
    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    pub fn history(&mut self, entry: NewHistoryEntry) {
        self.changes.push(Change::History(entry));
    }

    /// The earliest instant its changes make something come due: a queued job's due time, a
    /// parked job's deadline, a run timeout, a lease's end.
    pub fn scheduled(&self) -> Option<Ts> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::QueueJob { due, .. } | Change::ParkJob { due, .. } => Some(*due),
                Change::SetJobTimeout { at, .. } => Some(*at),
                Change::RenewLease { until, .. } => Some(*until),
                Change::InsertRun(run) => run.not_before,
                _ => None,
            })
            .min()
    }

    /// Its effects with [`scheduled`](Self::scheduled) noted.
    pub fn effects_with_schedule(&self) -> Effects {
        let mut effects = self.effects.clone();
        effects.schedule(self.scheduled());
        effects
    }

    pub fn extend(&mut self, other: Transition) {
        self.changes.extend(other.changes);
        self.follow_ups.extend(other.follow_ups);
        self.effects.merge(other.effects);
    }
}

/// A history entry about a run.
pub fn run_entry(env: &EnvId, kind: HistoryKind, run: &RunId, payload: Value) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind,
        run_id: Some(run.clone()),
        function_id: None,
        event_id: None,
        payload,
    }
}

/// Ends a run with a terminal status and everything that follows: its row, its history
/// entry, its waits and job gone, its parent resumed, its lane slot freed, sync waiters told.
/// (A cancel writes its own status row and entries, then calls [`release`].)
pub fn end_run(
    run: &RunFacts,
    lane: Option<&LaneRef>,
    status: RunStatus,
    output: Option<Value>,
    error: Option<Value>,
) -> Transition {
    let mut t = Transition::default();
    t.push(Change::FinishRun {
        run: run.id.clone(),
        status,
        output: output.clone(),
        error: error.clone(),
    });
    let kind = if status == RunStatus::Completed {
        HistoryKind::RunCompleted
    } else {
        HistoryKind::RunFailed
    };
    let payload = serde_json::json!({"status": status.as_str(), "output": output, "error": error});
    t.history(run_entry(&run.env, kind, &run.id, payload));
    t.extend(release(run, lane, status, output.as_ref(), error.as_ref()));
    t
}

/// What follows a run reaching a terminal status: no job, no waits, the parent resumed with
/// the outcome, the lane's next run admitted, sync waiters woken.
pub fn release(
    run: &RunFacts,
    lane: Option<&LaneRef>,
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&Value>,
) -> Transition {
    let mut t = Transition::default();
    t.push(Change::DeleteWaits {
        run: run.id.clone(),
    });
    t.push(Change::DeleteJob {
        run: run.id.clone(),
    });
    // A parent's job row before the lane lock: job rows first, then lanes.
    if let Some(parent) = &run.parent {
        t.follow_ups.push(FollowUp::ResumeParent {
            env: run.env.clone(),
            parent: parent.clone(),
            child: run.id.clone(),
            resolution: children::child_outcome(run, status, output, error),
        });
        t.effects.work_ready = true;
    }
    if let Some(lane) = lane.filter(|l| l.limit > 0) {
        t.follow_ups.push(FollowUp::PromoteLane(lane.clone()));
    }
    t.effects.finished_runs.push(run.id.clone());
    t.effects.ended_runs.push(EndedRun {
        env: run.env.clone(),
        function_id: run.function_id.clone(),
        status,
        created_at: run.created_at,
    });
    t
}
