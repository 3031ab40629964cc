//! What the timer does to a job whose time came: a run past its timeout fails (`RUN_TIMEOUT`),
//! an expired lease is a failed attempt (`LEASE_EXPIRED`, retried under the function's policy),
//! a parked invoke past its deadline fails its step and goes on, a parked wait past its
//! deadline fails the run (`WAIT_TIMEOUT`).

use serde_json::Value;

use super::{Change, JobFacts, JobState, LaneRef, RunFacts, Transition, end_run, run_entry};
use crate::domain::function::RetryPolicy;
use crate::domain::history::HistoryKind;
use crate::domain::job::retry_delay;
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;

/// The error code of an attempt whose lease expired.
pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";
/// The error code of a run that exceeded its timeout.
pub const RUN_TIMEOUT: &str = "RUN_TIMEOUT";
/// The error code of a wait for an event that timed out.
pub const WAIT_TIMEOUT: &str = "WAIT_TIMEOUT";

/// What the timer does to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// The run's own timeout passed: it fails, whatever it was doing.
    RunTimeout,
    /// The worker holding the job stopped renewing its lease.
    LeaseExpired,
    /// A parked wait or invoke reached its deadline.
    ParkedDeadline,
}

/// The timer's decision for one job at `now`; `None` when nothing is due (the row changed
/// between the sweep's read and its lock).
pub fn timer_action(job: &JobFacts, now: Ts) -> Option<TimerAction> {
    if job.timeout_at.is_some_and(|t| t <= now) {
        Some(TimerAction::RunTimeout)
    } else if job.state == JobState::Leased && job.lease_expires_at.is_some_and(|t| t <= now) {
        Some(TimerAction::LeaseExpired)
    } else if job.state == JobState::Parked && job.due_at <= now {
        Some(TimerAction::ParkedDeadline)
    } else {
        None
    }
}

/// The error an attempt ends with when its lease expired.
pub fn lease_expired_error(attempt: i32) -> Value {
    serde_json::json!({
        "message": format!("attempt {attempt} stopped: the worker holding it did not report or renew its lease in time"),
        "code": LEASE_EXPIRED,
        "retryable": true,
    })
}

/// The run exceeded its timeout: it fails.
pub fn run_timeout(run: &RunFacts, lane: Option<&LaneRef>) -> Transition {
    let error = serde_json::json!({"message": "the run exceeded its timeout", "code": RUN_TIMEOUT, "retryable": false});
    end_run(run, lane, RunStatus::Failed, None, Some(error))
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterFailure {
    /// Another attempt after the delay.
    Retry(std::time::Duration),
    /// The attempts ran out under `on_exhausted = "pause"`: the run is held for a fix.
    Pause,
    /// The run fails (a non-retryable error, or attempts out under `on_exhausted = "fail"`).
    Fail,
}

/// Decides what follows a failed attempt: a retry while attempts remain, then the policy's
/// `on_exhausted` (no policy: `pause`, the documented server default; a policy that names
/// none: `fail`, as before). A non-retryable error always fails the run.
pub fn after_failure(
    policy: Option<&RetryPolicy>,
    retryable: bool,
    attempt: i32,
    max_attempts: i32,
    retry_after_ms: Option<i64>,
) -> AfterFailure {
    if !retryable {
        return AfterFailure::Fail;
    }
    match retry_delay(policy, attempt, max_attempts, retry_after_ms) {
        Some(delay) => AfterFailure::Retry(delay),
        None if RetryPolicy::pauses_when_exhausted(policy) => AfterFailure::Pause,
        None => AfterFailure::Fail,
    }
}

/// A failed attempt: retried after a delay, held paused, or the end of the run.
pub fn failed_attempt(
    run: &RunFacts,
    lane: Option<&LaneRef>,
    error: Value,
    next: AfterFailure,
    now: Ts,
) -> Transition {
    let delay = match next {
        AfterFailure::Retry(delay) => delay,
        AfterFailure::Fail => return end_run(run, lane, RunStatus::Failed, None, Some(error)),
        AfterFailure::Pause => {
            return super::control::pause_now(
                run,
                super::control::PauseAt {
                    resume: JobState::Queued,
                    due: now,
                    reason: super::control::PAUSED_RETRIES_EXHAUSTED,
                    error: Some(error),
                },
                &serde_json::json!({"attempt": run.attempt}),
            );
        }
    };
    let mut t = Transition::default();
    t.push(Change::RetryRun {
        run: run.id.clone(),
        error: error.clone(),
    });
    t.push(Change::QueueJob {
        run: run.id.clone(),
        due: now.plus(delay),
    });
    let payload = serde_json::json!({
        "failed_attempt": run.attempt,
        "next_attempt": run.attempt + 1,
        "delay_ms": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "error": error,
    });
    t.history(run_entry(
        &run.env,
        HistoryKind::RunRetrying,
        &run.id,
        payload,
    ));
    t.effects.work_ready = true;
    t
}

/// The lease expired: a failed attempt under the function's retry policy.
pub fn lease_expired(
    run: &RunFacts,
    lane: Option<&LaneRef>,
    policy: Option<&RetryPolicy>,
    now: Ts,
) -> Transition {
    if run.pause_requested {
        // The worker went away at a step boundary of its own: the pause takes effect now.
        return super::control::pause_now(
            run,
            super::control::PauseAt {
                resume: JobState::Queued,
                due: now,
                reason: super::control::PAUSED_BY_REQUEST,
                error: None,
            },
            &serde_json::json!({"lease_expired": true}),
        );
    }
    let next = after_failure(policy, true, run.attempt, run.max_attempts, None);
    failed_attempt(run, lane, lease_expired_error(run.attempt), next, now)
}

/// A parked run reached its deadline. `waiting` is its waiting step (id and type), if any.
pub fn parked_deadline(
    run: &RunFacts,
    lane: Option<&LaneRef>,
    waiting: Option<(&str, &str)>,
) -> Transition {
    match waiting {
        Some((step_id, "invoke_function")) => {
            let mut t = Transition::default();
            t.push(Change::ResolveStep {
                run: run.id.clone(),
                env: run.env.clone(),
                step_id: step_id.to_owned(),
                status: "failed",
                output: None,
                error: Some(serde_json::json!({"message": "invoke timed out", "retryable": false})),
            });
            t.push(Change::Resume {
                run: run.id.clone(),
                env: run.env.clone(),
                reason: serde_json::json!({"step_id": step_id, "reason": "invoke_timeout"}),
            });
            t.effects.work_ready = true;
            t
        }
        other => {
            let step = other.map(|(s, _)| s).unwrap_or_default();
            let error = serde_json::json!({
                "message": format!("wait_for_event step '{step}' timed out"),
                "code": WAIT_TIMEOUT,
                "retryable": false,
            });
            let mut t = Transition::default();
            t.push(Change::ResolveStep {
                run: run.id.clone(),
                env: run.env.clone(),
                step_id: step.to_owned(),
                status: "timed_out",
                output: None,
                error: Some(error.clone()),
            });
            t.extend(end_run(run, lane, RunStatus::Failed, None, Some(error)));
            t
        }
    }
}
