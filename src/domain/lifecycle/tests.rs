//! The lifecycle without a database: table-driven tests of each decision, and a property test
//! that drives random sequences of emits, claims, reports (fresh and stale), events, timers
//! and cancels through the decisions over an in-memory model, checking after every step the
//! invariants of ARCHITECTURE.md: one job row per unfinished run and none for a finished one,
//! stale fences refused and changing nothing, every status change with its history entry in
//! the same transition, no lane over its limit.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::children::resume_parent;
use super::create::{RunSpec, create_run};
use super::report::{ChildFunction, ReportDecision, ReportFacts, decide, fence_holds};
use super::timer::{TimerAction, lease_expired, parked_deadline, run_timeout, timer_action};
use super::waits::{WaitFacts, satisfied, satisfies};
use super::*;
use crate::domain::function::RetryPolicy;
use crate::domain::job::{Fence, JobFailure, JobReport, ReportOutcome, ReportedStep, YieldRequest};

fn env() -> EnvId {
    EnvId::from_stored("env".into())
}

fn at(ms: i64) -> Ts {
    Ts(chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("instant"))
}

fn run_facts(id: &str, attempt: i32, max_attempts: i32) -> RunFacts {
    RunFacts {
        id: RunId::from_stored(id.into()),
        env: env(),
        function_id: FunctionId::from_stored("f".into()),
        status: RunStatus::Running,
        attempt,
        max_attempts,
        input: json!({"order": 7}),
        parent: None,
        pause_requested: false,
        created_at: at(0),
    }
}

fn leased_job(run: &str, seq: i64, token: &str, lease_until: Ts) -> JobFacts {
    JobFacts {
        run: RunId::from_stored(run.into()),
        env: env(),
        state: JobState::Leased,
        execution_seq: seq,
        lease_token: Some(token.into()),
        worker_id: Some("w".into()),
        lease_expires_at: Some(lease_until),
        due_at: at(0),
        timeout_at: None,
        lane: None,
    }
}

fn fence(seq: i64, token: &str) -> Fence {
    Fence {
        env_id: env(),
        worker_id: "w".into(),
        execution_seq: seq,
        lease_token: token.into(),
    }
}

fn report(seq: i64, token: &str, steps: Vec<ReportedStep>, outcome: ReportOutcome) -> JobReport {
    JobReport {
        dispatch_id: format!("r.{seq}"),
        fence: fence(seq, token),
        steps,
        step_offset: 0,
        outcome,
    }
}

fn step(id: &str) -> ReportedStep {
    ReportedStep {
        id: id.into(),
        name: id.into(),
        step_type: "run".into(),
        completed: true,
        output: Some(json!(1)),
        error: None,
        started_at: None,
        ended_at: None,
        compensation_for: None,
    }
}

fn kinds(t: &Transition) -> Vec<&'static str> {
    t.changes
        .iter()
        .map(|c| match c {
            Change::UpsertStep(_) => "upsert_step",
            Change::ResolveStep { .. } => "resolve_step",
            Change::WakeSleepingSteps { .. } => "wake_sleeping_steps",
            Change::StartRun { .. } => "start_run",
            Change::SetJobTimeout { .. } => "set_job_timeout",
            Change::RenewLease { .. } => "renew_lease",
            Change::QueueJob { .. } => "queue_job",
            Change::ParkJob { .. } => "park_job",
            Change::Resume { .. } => "resume",
            Change::Unblock { .. } => "unblock",
            Change::DeleteJob { .. } => "delete_job",
            Change::SetRunStatus { .. } => "set_run_status",
            Change::RetryRun { .. } => "retry_run",
            Change::FinishRun { .. } => "finish_run",
            Change::CancelRun { .. } => "cancel_run",
            Change::InsertWait(_) => "insert_wait",
            Change::DeleteWaits { .. } => "delete_waits",
            Change::InsertRun(_) => "insert_run",
            Change::History(h) => h.kind.as_str(),
            Change::PauseJob { .. } => "pause_job",
            Change::MarkPaused { .. } => "mark_paused",
            Change::RequestPause { .. } => "request_pause",
            Change::UnpauseJob { .. } => "unpause_job",
            Change::ClearPause { .. } => "clear_pause",
            Change::ResetSteps { .. } => "reset_steps",
            Change::ReviveRun { .. } => "revive_run",
            Change::EditStep { .. } => "edit_step",
        })
        .collect()
}

fn applied(d: ReportDecision) -> Transition {
    match d {
        ReportDecision::Apply(t) | ReportDecision::Paused(t) => t,
        ReportDecision::Stale => panic!("expected the report to apply"),
    }
}

#[test]
fn fences_hold_only_for_the_current_dispatch_its_worker_and_environment() {
    let job = leased_job("r", 3, "tok", at(90_000));
    assert!(fence_holds(&job, &fence(3, "tok")));
    let cases = [
        Fence {
            execution_seq: 2,
            ..fence(3, "tok")
        },
        Fence {
            lease_token: "forged".into(),
            ..fence(3, "tok")
        },
        Fence {
            worker_id: "other".into(),
            ..fence(3, "tok")
        },
        Fence {
            env_id: EnvId::from_stored("other".into()),
            ..fence(3, "tok")
        },
    ];
    for f in cases {
        assert!(!fence_holds(&job, &f), "{f:?}");
    }
    let queued = JobFacts {
        state: JobState::Queued,
        ..job
    };
    assert!(
        !fence_holds(&queued, &fence(3, "tok")),
        "a job no longer leased"
    );
}

#[test]
fn reports_decide_what_the_run_does_next() {
    let run = run_facts("r", 1, 3);
    // A lease ending within two thirds of the TTL: the checkpoint renews it.
    let job = leased_job("r", 1, "tok", at(30_000));
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_delay_ms: 200,
        backoff_factor: 2.0,
        max_delay_ms: 10_000,
        on_exhausted: String::new(),
    };
    let facts = ReportFacts {
        run: &run,
        job: &job,
        policy: Some(&policy),
        child_function: None,
        child_id: None,
    };
    let now = at(1_000);
    let lease = at(91_000);
    let failure = |retryable| {
        ReportOutcome::Failed(JobFailure {
            message: "boom".into(),
            code: "E".into(),
            retryable,
            retry_after_ms: None,
        })
    };
    let table: Vec<(ReportOutcome, Vec<&str>)> = vec![
        (
            ReportOutcome::Progress,
            vec!["upsert_step", "step.completed", "renew_lease"],
        ),
        (
            ReportOutcome::Completed {
                output: json!("done"),
            },
            vec![
                "upsert_step",
                "step.completed",
                "finish_run",
                "run.completed",
                "delete_waits",
                "delete_job",
            ],
        ),
        (
            failure(true),
            vec![
                "upsert_step",
                "step.completed",
                "retry_run",
                "queue_job",
                "run.retrying",
            ],
        ),
        (
            failure(false),
            vec![
                "upsert_step",
                "step.completed",
                "finish_run",
                "run.failed",
                "delete_waits",
                "delete_job",
            ],
        ),
        (
            ReportOutcome::Yielded(YieldRequest::Sleep {
                step_id: "r:nap:0".into(),
                until: at(5_000),
            }),
            vec![
                "upsert_step",
                "step.completed",
                "upsert_step",
                "queue_job",
                "set_run_status",
                "run.yielded",
            ],
        ),
        (
            ReportOutcome::Yielded(YieldRequest::WaitForEvent {
                step_id: "r:approval:0".into(),
                event: "approved".into(),
                match_path: Some("data.order".into()),
                match_value: None,
                timeout: Duration::from_secs(60),
            }),
            vec![
                "upsert_step",
                "step.completed",
                "upsert_step",
                "insert_wait",
                "park_job",
                "set_run_status",
                "run.yielded",
            ],
        ),
        (
            ReportOutcome::Yielded(YieldRequest::Invoke {
                step_id: "r:child:0".into(),
                function_id: "missing".into(),
                input: json!({}),
                timeout: Duration::from_secs(30),
            }),
            vec![
                "upsert_step",
                "step.completed",
                "upsert_step",
                "resolve_step",
                "queue_job",
                "run.yielded",
            ],
        ),
    ];
    for (outcome, expected) in table {
        let t = applied(decide(
            &facts,
            &report(1, "tok", vec![step("r:a:0")], outcome.clone()),
            lease,
            now,
        ));
        assert_eq!(kinds(&t), expected, "{outcome:?}");
    }
    // A retry waits the backoff; the last attempt ends the run.
    let t = applied(decide(
        &facts,
        &report(1, "tok", vec![], failure(true)),
        lease,
        now,
    ));
    assert!(t.changes.contains(&Change::QueueJob {
        run: run.id.clone(),
        due: at(1_200)
    }));
    let last = RunFacts {
        attempt: 3,
        ..run.clone()
    };
    let facts_last = ReportFacts {
        run: &last,
        ..facts.clone()
    };
    let t = applied(decide(
        &facts_last,
        &report(1, "tok", vec![], failure(true)),
        lease,
        now,
    ));
    assert!(kinds(&t).contains(&"run.failed"));
    // The wait's expected value comes from the trigger's data.
    let t = applied(decide(
        &facts,
        &report(
            1,
            "tok",
            vec![],
            ReportOutcome::Yielded(YieldRequest::WaitForEvent {
                step_id: "r:w:0".into(),
                event: "approved".into(),
                match_path: Some("data.order".into()),
                match_value: None,
                timeout: Duration::from_secs(60),
            }),
        ),
        lease,
        now,
    ));
    let wait = t.changes.iter().find_map(|c| match c {
        Change::InsertWait(w) => Some(w.clone()),
        _ => None,
    });
    assert_eq!(wait.and_then(|w| w.match_value), Some(json!(7)));
    // A stale fence writes nothing.
    assert_eq!(
        decide(
            &facts,
            &report(1, "forged", vec![step("r:a:0")], ReportOutcome::Progress),
            lease,
            now
        ),
        ReportDecision::Stale
    );
}

#[test]
fn an_invoke_starts_a_child_within_its_lane() {
    let run = run_facts("p", 1, 3);
    let job = leased_job("p", 1, "tok", at(90_000));
    let lane = LaneRef {
        env: env(),
        function_id: FunctionId::from_stored("c".into()),
        key: "k".into(),
        limit: 1,
    };
    let child = |active| ChildFunction {
        function_id: FunctionId::from_stored("c".into()),
        version: 2,
        max_attempts: 3,
        lane: Some(lane.clone()),
        lane_active: active,
    };
    let invoke = ReportOutcome::Yielded(YieldRequest::Invoke {
        step_id: "p:child:0".into(),
        function_id: "c".into(),
        input: json!({"x": 1}),
        timeout: Duration::from_secs(30),
    });
    for (active, admitted) in [(0, true), (1, false)] {
        let facts = ReportFacts {
            run: &run,
            job: &job,
            policy: None,
            child_function: Some(child(active)),
            child_id: Some(RunId::from_stored("c1".into())),
        };
        let t = applied(decide(
            &facts,
            &report(1, "tok", vec![], invoke.clone()),
            at(91_000),
            at(0),
        ));
        let row = t
            .changes
            .iter()
            .find_map(|c| match c {
                Change::InsertRun(r) => Some(r.clone()),
                _ => None,
            })
            .expect("a child run");
        assert_eq!(row.parent, Some(run.id.clone()));
        assert_eq!(row.parent_step.as_deref(), Some("p:child:0"));
        assert_eq!(row.job_state == JobState::Queued, admitted);
        assert_eq!(row.status == RunStatus::Running, admitted);
        assert!(kinds(&t).contains(&"park_job"));
    }
}

#[test]
fn the_timer_decides_by_what_is_due() {
    let now = at(10_000);
    let job = |state, due_at, timeout_at, lease_expires_at| JobFacts {
        state,
        due_at,
        timeout_at,
        lease_expires_at,
        ..leased_job("r", 1, "t", at(0))
    };
    let (past, future) = (at(9_000), at(60_000));
    let cases = [
        (
            job(JobState::Leased, past, None, Some(past)),
            Some(TimerAction::LeaseExpired),
        ),
        (job(JobState::Leased, past, None, Some(future)), None),
        (
            job(JobState::Leased, past, Some(past), Some(past)),
            Some(TimerAction::RunTimeout),
        ),
        (
            job(JobState::Parked, past, None, None),
            Some(TimerAction::ParkedDeadline),
        ),
        (job(JobState::Parked, future, None, None), None),
        (
            job(JobState::Parked, future, Some(past), None),
            Some(TimerAction::RunTimeout),
        ),
        // A queued job is claimed, not fired; its due time is the claim's business.
        (job(JobState::Queued, past, None, None), None),
        (job(JobState::Queued, past, Some(future), None), None),
    ];
    for (facts, expected) in cases {
        assert_eq!(timer_action(&facts, now), expected, "{facts:?}");
    }
}

#[test]
fn timers_retry_fail_and_resume() {
    let run = run_facts("r", 1, 2);
    let t = lease_expired(&run, None, None, at(0));
    assert_eq!(kinds(&t), vec!["retry_run", "queue_job", "run.retrying"]);
    let last = RunFacts {
        attempt: 2,
        ..run.clone()
    };
    // No policy: the server default, on_exhausted = "pause", holds the run for a fix.
    let t = lease_expired(&last, None, None, at(0));
    assert_eq!(kinds(&t), vec!["pause_job", "mark_paused", "run.paused"]);
    // A policy that names no on_exhausted keeps its old meaning: the run fails.
    let explicit = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let t = lease_expired(&last, None, Some(&explicit), at(0));
    assert!(kinds(&t).contains(&"run.failed"));
    let failed = t.changes.iter().find_map(|c| match c {
        Change::FinishRun { error, .. } => error.clone(),
        _ => None,
    });
    assert_eq!(
        failed.and_then(|e| e.get("code").cloned()),
        Some(json!("LEASE_EXPIRED"))
    );
    assert_eq!(
        kinds(&run_timeout(&run, None))[..2],
        ["finish_run", "run.failed"]
    );
    assert_eq!(
        kinds(&parked_deadline(
            &run,
            None,
            Some(("r:c:0", "invoke_function"))
        )),
        vec!["resolve_step", "resume"]
    );
    assert_eq!(
        kinds(&parked_deadline(
            &run,
            None,
            Some(("r:w:0", "wait_for_event"))
        ))[..3],
        ["resolve_step", "finish_run", "run.failed"]
    );
}

#[test]
fn lanes_admit_in_order_up_to_the_limit() {
    let lane = LaneRef {
        env: env(),
        function_id: FunctionId::from_stored("f".into()),
        key: "k".into(),
        limit: 2,
    };
    let blocked: Vec<RunId> = ["a", "b", "c"]
        .iter()
        .map(|r| RunId::from_stored((*r).into()))
        .collect();
    for (active, admitted) in [(0, 2), (1, 1), (2, 0), (5, 0)] {
        let t = lanes::promote(&lane, active, &blocked);
        let unblocked: Vec<&RunId> = t
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Unblock { run } => Some(run),
                _ => None,
            })
            .collect();
        assert_eq!(
            unblocked,
            blocked.iter().take(admitted).collect::<Vec<_>>(),
            "active {active}"
        );
        assert_eq!(t.effects.work_ready, admitted > 0);
    }
}

#[test]
fn waits_match_by_path_and_value() {
    let wait = |path: Option<&str>, value: Option<Value>| WaitFacts {
        run: RunId::from_stored("r".into()),
        step_id: "r:w:0".into(),
        match_path: path.map(str::to_owned),
        match_value: value,
    };
    let event = json!({"id": "e", "name": "approved", "data": {"order": 42}});
    assert!(satisfies(&wait(None, None), &event));
    assert!(satisfies(
        &wait(Some("data.order"), Some(json!(42))),
        &event
    ));
    assert!(
        satisfies(&wait(Some("data.order"), Some(json!("42"))), &event),
        "\"42\" matches 42"
    );
    assert!(!satisfies(
        &wait(Some("data.order"), Some(json!(7))),
        &event
    ));
    assert!(!satisfies(
        &wait(Some("data.missing"), Some(json!(42))),
        &event
    ));
    let t = satisfied(&env(), &wait(None, None), &event);
    assert_eq!(kinds(&t), vec!["resolve_step", "resume"]);
}

/// How a transition resumes the run's parent; panics when it does not.
fn parent_resumption(t: &Transition) -> children::StepResolution {
    t.follow_ups
        .iter()
        .find_map(|f| match f {
            FollowUp::ResumeParent { resolution, .. } => Some(resolution.clone()),
            _ => None,
        })
        .expect("the parent is resumed")
}

#[test]
fn a_child_ending_resumes_its_parent_with_the_outcome() {
    let mut child = run_facts("c", 1, 1);
    child.parent = Some(ParentLink {
        run: RunId::from_stored("p".into()),
        step_id: "p:c:0".into(),
    });
    let t = end_run(&child, None, RunStatus::Completed, Some(json!(5)), None);
    let resume = parent_resumption(&t);
    assert_eq!(
        (resume.status, resume.output),
        ("completed", Some(json!(5)))
    );
    let t = end_run(
        &child,
        None,
        RunStatus::Failed,
        None,
        Some(json!({"message": "no"})),
    );
    let resume = parent_resumption(&t);
    assert_eq!(resume.status, "failed");
    assert_eq!(
        resume.error.as_ref().and_then(|e| e.get("cause")).cloned(),
        Some(json!("no"))
    );
    assert_eq!(
        resume
            .error
            .as_ref()
            .and_then(|e| e.get("retryable"))
            .cloned(),
        Some(json!(false))
    );
}

#[test]
fn cancels_release_and_record_both_entries() {
    let run = run_facts("r", 1, 1);
    let t = cancel::cancel(&run, None, None, "stop").expect("cancellable");
    assert_eq!(
        kinds(&t),
        vec![
            "cancel_run",
            "delete_waits",
            "delete_job",
            "run.status_changed",
            "run.cancelled"
        ]
    );
    let done = RunFacts {
        status: RunStatus::Completed,
        ..run
    };
    assert!(
        cancel::cancel(&done, None, None, "stop").is_none(),
        "a terminal run stays as it is"
    );
}

// ── The property test ────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone)]
struct ModelRun {
    facts: RunFacts,
    lane: Option<LaneRef>,
}

/// The tables the decisions change, in memory, changed exactly as the store changes them.
#[derive(Default)]
struct Model {
    now: i64,
    runs: BTreeMap<RunId, ModelRun>,
    jobs: BTreeMap<RunId, JobFacts>,
    /// (status, type, order written)
    steps: BTreeMap<(RunId, String), (&'static str, String, u64)>,
    waits: BTreeMap<(RunId, String), NewWait>,
    history: Vec<NewHistoryEntry>,
    next_id: u64,
    next_token: u64,
    /// Fences handed out, current or not, to send stale reports with.
    fences: Vec<(RunId, Fence)>,
}

const LIMIT: i32 = 2;

fn lane_for(key: u8) -> LaneRef {
    LaneRef {
        env: env(),
        function_id: FunctionId::from_stored("f".into()),
        key: format!("k{key}"),
        limit: LIMIT,
    }
}

impl Model {
    fn now(&self) -> Ts {
        at(self.now)
    }

    fn fresh(&mut self, prefix: &str) -> RunId {
        self.next_id += 1;
        RunId::from_stored(format!("{prefix}{:04}", self.next_id))
    }

    fn active_in(&self, lane: &LaneRef) -> i64 {
        self.jobs
            .values()
            .filter(|j| j.lane.as_ref() == Some(lane) && j.state != JobState::Blocked)
            .count() as i64
    }

    fn blocked_in(&self, lane: &LaneRef) -> Vec<RunId> {
        self.jobs
            .values()
            .filter(|j| j.lane.as_ref() == Some(lane) && j.state == JobState::Blocked)
            .map(|j| j.run.clone())
            .collect()
    }

    /// Applies a transition and its follow-ups as the store does, checking that every run
    /// whose status changed has a history entry in it.
    fn apply(&mut self, t: Transition) {
        let before: BTreeMap<RunId, RunStatus> = self
            .runs
            .iter()
            .map(|(id, r)| (id.clone(), r.facts.status))
            .collect();
        let mut entries: Vec<RunId> = Vec::new();
        let mut pending = vec![t];
        while let Some(t) = pending.pop() {
            for change in t.changes {
                if let Change::History(h) = &change {
                    entries.extend(h.run_id.clone());
                }
                if let Change::Resume { run, .. } = &change {
                    // Written with the resume, when it happens.
                    if self
                        .jobs
                        .get(run)
                        .is_some_and(|j| j.state == JobState::Parked)
                    {
                        entries.push(run.clone());
                    }
                }
                self.change(change);
            }
            for follow in t.follow_ups {
                pending.push(match follow {
                    FollowUp::PromoteLane(lane) => {
                        let active = self.active_in(&lane);
                        lanes::promote(&lane, active, &self.blocked_in(&lane))
                    }
                    FollowUp::ResumeParent {
                        env,
                        parent,
                        child,
                        resolution,
                    } => resume_parent(&env, &parent, &child, &resolution),
                });
            }
        }
        for (id, run) in &self.runs {
            let changed = before.get(id).is_none_or(|s| *s != run.facts.status);
            assert!(
                !changed || entries.contains(id),
                "run {id}: status changed to {} without a history entry",
                run.facts.status
            );
        }
    }

    fn change(&mut self, change: Change) {
        let now = self.now();
        match change {
            Change::UpsertStep(s) => {
                self.next_id += 1;
                self.steps
                    .insert((s.run, s.step_id), (s.status, s.step_type, self.next_id));
            }
            Change::ResolveStep {
                run,
                step_id,
                status,
                ..
            } => {
                if let Some(s) = self.steps.get_mut(&(run, step_id)) {
                    s.0 = status;
                }
            }
            Change::WakeSleepingSteps { run } => {
                for ((r, _), s) in self.steps.iter_mut() {
                    if *r == run && s.0 == "sleeping" {
                        s.0 = "completed";
                    }
                }
            }
            Change::StartRun { run } => self.status(&run, RunStatus::Running),
            Change::SetJobTimeout { run, at } => {
                if let Some(j) = self.jobs.get_mut(&run) {
                    j.timeout_at.get_or_insert(at);
                }
            }
            Change::RenewLease { run, until } => {
                if let Some(j) = self.jobs.get_mut(&run) {
                    j.lease_expires_at = Some(until);
                }
            }
            Change::QueueJob { run, due } => self.job_state(&run, JobState::Queued, due),
            Change::ParkJob { run, due } => self.job_state(&run, JobState::Parked, due),
            Change::Resume { run, .. } => {
                if self
                    .jobs
                    .get(&run)
                    .is_some_and(|j| j.state == JobState::Parked)
                {
                    self.job_state(&run, JobState::Queued, now);
                    self.status(&run, RunStatus::Running);
                }
            }
            Change::Unblock { run } => {
                if self
                    .jobs
                    .get(&run)
                    .is_some_and(|j| j.state == JobState::Blocked)
                {
                    self.job_state(&run, JobState::Queued, now);
                }
            }
            Change::DeleteJob { run } => {
                self.jobs.remove(&run);
            }
            Change::SetRunStatus { run, status } => self.status(&run, status),
            Change::RetryRun { run, .. } => {
                if let Some(r) = self.runs.get_mut(&run) {
                    r.facts.attempt += 1;
                }
            }
            Change::FinishRun { run, status, .. } => self.status(&run, status),
            Change::CancelRun { run, .. } => self.status(&run, RunStatus::Cancelled),
            Change::InsertWait(w) => {
                self.waits.insert((w.run.clone(), w.step_id.clone()), w);
            }
            Change::DeleteWaits { run } => self.waits.retain(|(r, _), _| *r != run),
            Change::PauseJob { run, due, .. } => self.job_state(&run, JobState::Paused, due),
            Change::MarkPaused { run, .. } => self.status(&run, RunStatus::Paused),
            // Run control by a person is not part of this model's random sequences.
            Change::RequestPause { .. }
            | Change::UnpauseJob { .. }
            | Change::ClearPause { .. }
            | Change::ResetSteps { .. }
            | Change::ReviveRun { .. }
            | Change::EditStep { .. } => {}
            Change::InsertRun(row) => {
                let lane = (row.lane_limit > 0).then(|| LaneRef {
                    env: row.env.clone(),
                    function_id: row.function_id.clone(),
                    key: row.lane_key.clone(),
                    limit: row.lane_limit,
                });
                self.jobs.insert(
                    row.id.clone(),
                    JobFacts {
                        run: row.id.clone(),
                        env: row.env.clone(),
                        state: row.job_state,
                        execution_seq: 0,
                        lease_token: None,
                        worker_id: None,
                        lease_expires_at: None,
                        due_at: now,
                        timeout_at: None,
                        lane: lane.clone(),
                    },
                );
                let parent = match (row.parent, row.parent_step) {
                    (Some(run), Some(step_id)) => Some(ParentLink { run, step_id }),
                    _ => None,
                };
                self.runs.insert(
                    row.id.clone(),
                    ModelRun {
                        facts: RunFacts {
                            id: row.id,
                            env: row.env,
                            function_id: row.function_id,
                            status: row.status,
                            attempt: 1,
                            max_attempts: row.max_attempts,
                            input: row.input,
                            parent,
                            pause_requested: false,
                            created_at: at(0),
                        },
                        lane,
                    },
                );
            }
            Change::History(h) => self.history.push(h),
        }
    }

    fn status(&mut self, run: &RunId, status: RunStatus) {
        if let Some(r) = self.runs.get_mut(run) {
            r.facts.status = status;
        }
    }

    fn job_state(&mut self, run: &RunId, state: JobState, due: Ts) {
        if let Some(j) = self.jobs.get_mut(run) {
            j.state = state;
            j.due_at = due;
            j.lease_token = None;
            j.worker_id = None;
            j.lease_expires_at = None;
        }
    }

    fn emit(&mut self, key: u8) {
        let id = self.fresh("r");
        let lane = lane_for(key);
        let active = self.active_in(&lane);
        let spec = RunSpec {
            id,
            env: env(),
            function_id: FunctionId::from_stored("f".into()),
            function_version: 1,
            event_id: None,
            event_name: "go".into(),
            input: json!({"order": key}),
            max_attempts: 3,
            parent: None,
            parent_step: None,
            lane: Some(lane),
            not_before: None,
        };
        self.apply(create_run(&spec, Some(active)));
    }

    fn claim(&mut self) {
        let now = self.now();
        let Some(job) = self
            .jobs
            .values()
            .find(|j| j.state == JobState::Queued && j.due_at <= now)
            .cloned()
        else {
            return;
        };
        self.next_token += 1;
        let token = format!("t{}", self.next_token);
        let j = self.jobs.get_mut(&job.run).expect("job");
        j.state = JobState::Leased;
        j.execution_seq += 1;
        j.lease_token = Some(token.clone());
        j.worker_id = Some("w".into());
        j.lease_expires_at = Some(at(self.now + 5_000));
        let seq = j.execution_seq;
        self.fences.push((job.run.clone(), fence(seq, &token)));
        self.apply(claim::dispatched(
            &env(),
            &job.run,
            seq,
            "w",
            Some(Duration::from_secs(60)),
            now,
        ));
    }

    fn report(&mut self, pick: usize, outcome: u8, invoke_existing: bool) {
        if self.fences.is_empty() {
            return;
        }
        let (run_id, fence) = self.fences[pick % self.fences.len()].clone();
        let (Some(run), Some(job)) = (
            self.runs.get(&run_id).cloned(),
            self.jobs.get(&run_id).cloned(),
        ) else {
            return;
        };
        let now = self.now();
        let step_id = format!("{run_id}:s{}:0", self.history.len());
        let outcome = match outcome % 7 {
            0 => ReportOutcome::Progress,
            1 => ReportOutcome::Completed {
                output: json!("ok"),
            },
            2 => ReportOutcome::Failed(JobFailure {
                message: "x".into(),
                code: "E".into(),
                retryable: true,
                retry_after_ms: None,
            }),
            3 => ReportOutcome::Failed(JobFailure {
                message: "x".into(),
                code: "E".into(),
                retryable: false,
                retry_after_ms: None,
            }),
            4 => ReportOutcome::Yielded(YieldRequest::Sleep {
                step_id,
                until: at(self.now + 1_000),
            }),
            5 => ReportOutcome::Yielded(YieldRequest::WaitForEvent {
                step_id,
                event: "ev".into(),
                match_path: None,
                match_value: None,
                timeout: Duration::from_secs(3),
            }),
            _ => ReportOutcome::Yielded(YieldRequest::Invoke {
                step_id,
                function_id: "f".into(),
                input: json!({}),
                timeout: Duration::from_secs(3),
            }),
        };
        let child_lane = lane_for(9);
        let child_function = invoke_existing.then(|| ChildFunction {
            function_id: FunctionId::from_stored("f".into()),
            version: 1,
            max_attempts: 2,
            lane: Some(child_lane.clone()),
            lane_active: self.active_in(&child_lane),
        });
        let child_id = Some(self.fresh("c"));
        let facts = ReportFacts {
            run: &run.facts,
            job: &job,
            policy: None,
            child_function,
            child_id,
        };
        let report = JobReport {
            dispatch_id: String::new(),
            fence: fence.clone(),
            steps: vec![step(&format!("{run_id}:a:0"))],
            step_offset: 0,
            outcome,
        };
        let holds = fence_holds(&job, &fence);
        match decide(&facts, &report, at(self.now + 5_000), now) {
            ReportDecision::Stale => assert!(!holds, "a fence that holds was refused"),
            ReportDecision::Apply(t) | ReportDecision::Paused(t) => {
                assert!(holds, "a stale fence was applied");
                self.apply(t);
            }
        }
    }

    fn event(&mut self) {
        let event = json!({"id": "e", "name": "ev", "data": {}});
        let waits: Vec<NewWait> = self
            .waits
            .values()
            .filter(|w| w.event_name == "ev")
            .cloned()
            .collect();
        for w in waits {
            self.waits.remove(&(w.run.clone(), w.step_id.clone()));
            let facts = WaitFacts {
                run: w.run.clone(),
                step_id: w.step_id.clone(),
                match_path: w.match_path.clone(),
                match_value: w.match_value.clone(),
            };
            if satisfies(&facts, &event) {
                self.apply(satisfied(&env(), &facts, &event));
            }
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        let now = self.now();
        let due: Vec<JobFacts> = self.jobs.values().cloned().collect();
        for job in due {
            let Some(action) = timer_action(&job, now) else {
                continue;
            };
            let Some(run) = self.runs.get(&job.run).cloned() else {
                continue;
            };
            let t = match action {
                TimerAction::RunTimeout => run_timeout(&run.facts, run.lane.as_ref()),
                TimerAction::LeaseExpired => {
                    lease_expired(&run.facts, run.lane.as_ref(), None, now)
                }
                TimerAction::ParkedDeadline => {
                    // The newest waiting step, as the store's `waiting_step` reads it.
                    let waiting = self
                        .steps
                        .iter()
                        .filter(|((r, _), s)| *r == job.run && s.0 == "waiting")
                        .max_by_key(|(_, s)| s.2)
                        .map(|((_, id), s)| (id.clone(), s.1.clone()));
                    parked_deadline(
                        &run.facts,
                        run.lane.as_ref(),
                        waiting.as_ref().map(|(s, k)| (s.as_str(), k.as_str())),
                    )
                }
            };
            self.apply(t);
        }
    }

    fn cancel(&mut self, pick: usize) {
        let ids: Vec<RunId> = self.runs.keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let run = self.runs[&ids[pick % ids.len()]].clone();
        if let Some(t) = cancel::cancel(&run.facts, None, run.lane.as_ref(), "test") {
            self.apply(t);
        }
    }

    fn check(&self) {
        for (id, run) in &self.runs {
            let has_job = self.jobs.contains_key(id);
            assert_eq!(
                has_job,
                !run.facts.status.is_terminal(),
                "run {id} ({}) has job: {has_job}",
                run.facts.status
            );
        }
        for job in self.jobs.values() {
            assert!(self.runs.contains_key(&job.run), "a job without its run");
        }
        let mut lanes: BTreeMap<String, i64> = BTreeMap::new();
        for job in self.jobs.values() {
            if let Some(lane) = job.lane.as_ref().filter(|_| job.state != JobState::Blocked) {
                *lanes.entry(lane.key.clone()).or_default() += 1;
            }
        }
        for (key, active) in lanes {
            assert!(
                active <= i64::from(LIMIT),
                "lane {key} has {active} active runs"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Emit(u8),
    Claim,
    Report(usize, u8, bool),
    Event,
    Advance(i64),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(Op::Emit),
        4 => Just(Op::Claim),
        6 => (0usize..64, 0u8..7, any::<bool>()).prop_map(|(p, o, e)| Op::Report(p, o, e)),
        1 => Just(Op::Event),
        2 => (100i64..7_000).prop_map(Op::Advance),
        1 => (0usize..64).prop_map(Op::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn the_lifecycle_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Emit(k) => model.emit(k),
                Op::Claim => model.claim(),
                Op::Report(p, o, e) => model.report(p, o, e),
                Op::Event => model.event(),
                Op::Advance(ms) => model.advance(ms),
                Op::Cancel(p) => model.cancel(p),
            }
            model.check();
        }
    }
}

// ── run control ──────────────────────────────────────────────────────────────────────────────

fn actor() -> control::Actor {
    control::Actor {
        key_id: "key_1".into(),
        reason: "because".into(),
    }
}

fn job_in(state: JobState, due: Ts) -> JobFacts {
    JobFacts {
        state,
        due_at: due,
        lease_token: None,
        worker_id: None,
        lease_expires_at: None,
        ..leased_job("r", 1, "tok", at(0))
    }
}

#[test]
fn a_pause_is_immediate_unless_a_worker_holds_the_run() {
    use control::{PauseDecision, pause};
    let run = run_facts("r", 1, 3);
    let leased = leased_job("r", 1, "tok", at(90_000));
    let PauseDecision::Requested(t) = pause(&run, Some(&leased), &actor()) else {
        panic!("a running dispatch pauses at its next boundary");
    };
    assert_eq!(kinds(&t), vec!["request_pause", "run.pause_requested"]);
    let requested = RunFacts {
        pause_requested: true,
        ..run.clone()
    };
    assert_eq!(
        pause(&requested, Some(&leased), &actor()),
        PauseDecision::Unchanged { requested: true }
    );
    for state in [JobState::Queued, JobState::Parked, JobState::Blocked] {
        let PauseDecision::Paused(t) = pause(&run, Some(&job_in(state, at(5_000))), &actor())
        else {
            panic!("a {state:?} job pauses at once");
        };
        assert!(t.changes.contains(&Change::PauseJob {
            run: run.id.clone(),
            resume: state,
            due: at(5_000),
        }));
        assert_eq!(kinds(&t), vec!["pause_job", "mark_paused", "run.paused"]);
    }
    let done = RunFacts {
        status: RunStatus::Completed,
        ..run
    };
    assert_eq!(
        pause(&done, None, &actor()),
        PauseDecision::Ended(RunStatus::Completed)
    );
}

#[test]
fn a_requested_pause_takes_effect_at_the_next_boundary() {
    let run = RunFacts {
        pause_requested: true,
        ..run_facts("r", 1, 3)
    };
    let job = leased_job("r", 1, "tok", at(90_000));
    let facts = ReportFacts {
        run: &run,
        job: &job,
        policy: None,
        child_function: None,
        child_id: None,
    };
    let checkpoint = report(1, "tok", vec![step("r:a:0")], ReportOutcome::Progress);
    let ReportDecision::Paused(t) = decide(&facts, &checkpoint, at(91_000), at(1_000)) else {
        panic!("a checkpoint of a run asked to pause is its boundary");
    };
    assert_eq!(
        kinds(&t),
        vec![
            "upsert_step",
            "step.completed",
            "pause_job",
            "mark_paused",
            "run.paused"
        ],
        "the step is recorded, then the run pauses; no lease renewal"
    );
    let sleep = report(
        1,
        "tok",
        vec![],
        ReportOutcome::Yielded(YieldRequest::Sleep {
            step_id: "r:nap:0".into(),
            until: at(60_000),
        }),
    );
    let t = applied(decide(&facts, &sleep, at(91_000), at(1_000)));
    let pause = t.changes.iter().find_map(|c| match c {
        Change::PauseJob { resume, due, .. } => Some((*resume, *due)),
        _ => None,
    });
    assert!(
        pause.is_some_and(|(_, due)| due == at(60_000)),
        "a sleep's end is kept for the resume: {pause:?}"
    );
    assert!(
        !t.changes
            .iter()
            .any(|c| matches!(c, Change::SetRunStatus { .. } | Change::QueueJob { .. })),
        "{:?}",
        kinds(&t)
    );
    let done = report(
        1,
        "tok",
        vec![],
        ReportOutcome::Completed { output: json!(1) },
    );
    let t = applied(decide(&facts, &done, at(91_000), at(1_000)));
    assert!(
        kinds(&t).contains(&"run.completed"),
        "a finished handler ends the run"
    );
    assert!(t.changes.contains(&Change::RequestPause {
        run: run.id.clone(),
        requested: false
    }));
}

#[test]
fn exhausted_retries_pause_by_default_and_fail_when_the_policy_says_so() {
    use super::timer::{AfterFailure, after_failure};
    assert_eq!(RetryPolicy::DEFAULT_MAX_ATTEMPTS, 25);
    assert!(matches!(
        after_failure(None, true, 1, 25, None),
        AfterFailure::Retry(d) if d == Duration::from_secs(1)
    ));
    assert_eq!(after_failure(None, true, 25, 25, None), AfterFailure::Pause);
    assert_eq!(after_failure(None, false, 1, 25, None), AfterFailure::Fail);
    let fail = RetryPolicy {
        max_attempts: 3,
        on_exhausted: "fail".into(),
        ..RetryPolicy::default()
    };
    assert_eq!(
        after_failure(Some(&fail), true, 3, 3, None),
        AfterFailure::Fail
    );
    let silent = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    assert_eq!(
        after_failure(Some(&silent), true, 3, 3, None),
        AfterFailure::Fail,
        "an explicit policy without on_exhausted keeps failing"
    );
    let pause = RetryPolicy {
        on_exhausted: "pause".into(),
        ..silent
    };
    assert_eq!(
        after_failure(Some(&pause), true, 3, 3, None),
        AfterFailure::Pause
    );
}

#[test]
fn resume_puts_a_paused_job_back_and_revives_a_failed_run() {
    use control::{ResumeDecision, ResumeFacts, resume};
    let paused = RunFacts {
        status: RunStatus::Paused,
        ..run_facts("r", 2, 3)
    };
    let job = job_in(JobState::Paused, at(0));
    let ResumeDecision::Apply(t) = resume(
        &ResumeFacts {
            run: &paused,
            job: Some(&job),
            from_step: Some(("r:b:0".into(), 1)),
            lane: None,
        },
        &actor(),
    ) else {
        panic!("a paused run resumes");
    };
    assert_eq!(
        kinds(&t),
        vec![
            "reset_steps",
            "steps.reset",
            "unpause_job",
            "clear_pause",
            "run.unpaused"
        ]
    );
    let failed = RunFacts {
        status: RunStatus::Failed,
        ..run_facts("r", 3, 3)
    };
    let ResumeDecision::Apply(t) = resume(
        &ResumeFacts {
            run: &failed,
            job: None,
            from_step: None,
            lane: None,
        },
        &actor(),
    ) else {
        panic!("a failed run resumes");
    };
    assert_eq!(kinds(&t), vec!["revive_run", "run.unpaused"]);
    assert!(t.effects.work_ready);
    let done = RunFacts {
        status: RunStatus::Completed,
        ..run_facts("r", 1, 3)
    };
    assert_eq!(
        resume(
            &ResumeFacts {
                run: &done,
                job: None,
                from_step: None,
                lane: None
            },
            &actor()
        ),
        ResumeDecision::NotResumable(RunStatus::Completed)
    );
}

#[test]
fn edits_need_a_stopped_run_and_a_finished_step() {
    use control::{EditDecision, StepEdit, StepFacts, edit_step};
    let step = StepFacts {
        step_id: "r:a:0".into(),
        status: "completed".into(),
        output: Some(json!(1)),
        error: None,
    };
    let running = run_facts("r", 1, 3);
    let leased = leased_job("r", 1, "tok", at(90_000));
    for (run, job, edit) in [
        (&running, Some(&leased), StepEdit::Inject),
        (&running, Some(&leased), StepEdit::Patch),
    ] {
        assert!(
            matches!(
                edit_step(run, job, &step, edit, json!(2), &actor()),
                EditDecision::Refused(_)
            ),
            "{edit:?} on a running run"
        );
    }
    let paused = RunFacts {
        status: RunStatus::Paused,
        ..running
    };
    let sleeping = StepFacts {
        status: "sleeping".into(),
        ..step.clone()
    };
    assert!(matches!(
        edit_step(
            &paused,
            None,
            &sleeping,
            StepEdit::Inject,
            json!(2),
            &actor()
        ),
        EditDecision::Refused(_)
    ));
    let EditDecision::Apply {
        transition,
        previous_output,
    } = edit_step(&paused, None, &step, StepEdit::Inject, json!(2), &actor())
    else {
        panic!("a paused run's completed step takes an injection");
    };
    assert_eq!(previous_output, Some(json!(1)));
    let entry = transition
        .changes
        .iter()
        .find_map(|c| match c {
            Change::History(h) => Some(h.clone()),
            _ => None,
        })
        .expect("an entry");
    assert_eq!(entry.kind, HistoryKind::StepInjected);
    assert_eq!(entry.payload["previous_output"], json!(1));
    assert_eq!(entry.payload["actor_id"], "key_1");
    assert_eq!(
        entry.payload["previous_output_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
}
