//! The pull-worker job protocol in domain terms: fences, reported steps, outcomes and yields,
//! plus the retry and duration rules the engine applies to them.

use std::time::Duration;

use serde_json::Value;

use crate::domain::function::RetryPolicy;
use crate::domain::storable::{NulError, check_json, check_text};
use crate::domain::time::Ts;
use crate::ids::EnvId;

/// Every ack and report must echo the dispatch's fence, and come from the environment and the
/// worker the job was leased to; any mismatch means the dispatch is stale (nothing is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The caller's environment (from its API key).
    pub env_id: EnvId,
    /// The worker the caller speaks for (the REST path's worker id, the stream's, the push
    /// dispatcher's).
    pub worker_id: String,
    pub execution_seq: i64,
    pub lease_token: String,
}

/// A step the worker executed in this dispatch (a `step.run`, publish or compensation).
#[derive(Debug, Clone)]
pub struct ReportedStep {
    pub id: String,
    pub name: String,
    pub step_type: String,
    pub completed: bool,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub compensation_for: Option<String>,
}

/// Why a run failed, as the worker reported it.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub message: String,
    pub code: String,
    pub retryable: bool,
    pub retry_after_ms: Option<i64>,
}

impl JobFailure {
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "message": self.message,
            "code": self.code,
            "retryable": self.retryable,
        });
        if let Some(ms) = self.retry_after_ms {
            v["retry_after_ms"] = ms.into();
        }
        v
    }
}

/// Where a run parks until something happens.
#[derive(Debug, Clone)]
pub enum YieldRequest {
    Sleep {
        step_id: String,
        until: Ts,
    },
    WaitForEvent {
        step_id: String,
        event: String,
        /// A data path (`data.order_id`) compared between the trigger and the awaited event.
        match_path: Option<String>,
        /// An explicit value the awaited event's `match_path` must equal.
        match_value: Option<String>,
        timeout: Duration,
    },
    Invoke {
        step_id: String,
        function_id: String,
        input: Value,
        timeout: Duration,
    },
    InvokeAsync {
        step_id: String,
        function_id: String,
        input: Value,
    },
}

impl YieldRequest {
    pub fn step_id(&self) -> &str {
        match self {
            Self::Sleep { step_id, .. }
            | Self::WaitForEvent { step_id, .. }
            | Self::Invoke { step_id, .. }
            | Self::InvokeAsync { step_id, .. } => step_id,
        }
    }
}

#[derive(Debug, Clone)]
pub enum ReportOutcome {
    Progress,
    Completed { output: Value },
    Failed(JobFailure),
    Yielded(YieldRequest),
}

/// One PUT of a job result or checkpoint.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub dispatch_id: String,
    pub fence: Fence,
    pub steps: Vec<ReportedStep>,
    pub step_offset: i64,
    pub outcome: ReportOutcome,
}

impl JobReport {
    /// Refuses a report that carries U+0000 anywhere (see [`crate::domain::storable`]), for
    /// every transport alike; the error names the field.
    pub fn check_storable(&self) -> Result<(), NulError> {
        check_text("job_id", &self.dispatch_id)?;
        check_text("lease_token", &self.fence.lease_token)?;
        check_result_storable(&self.steps, &self.outcome)
    }
}

/// Refuses steps and an outcome (a report's, or a push endpoint's answer) that carry U+0000.
pub fn check_result_storable(
    steps: &[ReportedStep],
    outcome: &ReportOutcome,
) -> Result<(), NulError> {
    {
        for (i, step) in steps.iter().enumerate() {
            let field = |name: &str| format!("steps[{i}].{name}");
            check_text(&field("id"), &step.id)?;
            check_text(&field("name"), &step.name)?;
            check_text(&field("type"), &step.step_type)?;
            if let Some(output) = &step.output {
                check_json(&field("output"), output)?;
            }
            if let Some(error) = &step.error {
                check_json(&field("error"), error)?;
            }
            if let Some(of) = &step.compensation_for {
                check_text(&field("compensation_for"), of)?;
            }
        }
        match outcome {
            ReportOutcome::Progress => Ok(()),
            ReportOutcome::Completed { output } => check_json("output", output),
            ReportOutcome::Failed(failure) => {
                check_text("error.message", &failure.message)?;
                check_text("error.code", &failure.code)
            }
            ReportOutcome::Yielded(request) => {
                check_text("yield.step_id", request.step_id())?;
                match request {
                    YieldRequest::Sleep { .. } => Ok(()),
                    YieldRequest::WaitForEvent {
                        event,
                        match_path,
                        match_value,
                        ..
                    } => {
                        check_text("yield.event", event)?;
                        check_text("yield.match", match_path.as_deref().unwrap_or_default())?;
                        check_text(
                            "yield.match_value",
                            match_value.as_deref().unwrap_or_default(),
                        )
                    }
                    YieldRequest::Invoke {
                        function_id, input, ..
                    }
                    | YieldRequest::InvokeAsync {
                        function_id, input, ..
                    } => {
                        check_text("yield.function_id", function_id)?;
                        check_json("yield.input", input)
                    }
                }
            }
        }
    }
}

/// What the timer finds on a job whose time came, as the store reads it under the row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFacts {
    /// `queued`, `leased`, `parked` or `blocked`.
    pub leased: bool,
    pub parked: bool,
    pub due_at: Ts,
    pub timeout_at: Option<Ts>,
    pub lease_expires_at: Option<Ts>,
}

/// What the timer does to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// The run's own timeout passed: it fails with `RUN_TIMEOUT`, whatever it was doing.
    RunTimeout,
    /// The worker holding the job stopped renewing its lease: a failed attempt
    /// (`LEASE_EXPIRED`), retried under the function's policy.
    LeaseExpired,
    /// A parked wait or invoke reached its deadline.
    ParkedDeadline,
}

/// The timer's decision for one job at `now`, `None` when nothing is due (the row changed
/// between the sweep's read and its lock).
pub fn timer_action(job: &TimerFacts, now: Ts) -> Option<TimerAction> {
    if job.timeout_at.is_some_and(|t| t <= now) {
        Some(TimerAction::RunTimeout)
    } else if job.leased && job.lease_expires_at.is_some_and(|t| t <= now) {
        Some(TimerAction::LeaseExpired)
    } else if job.parked && job.due_at <= now {
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

/// The error code of an attempt whose lease expired.
pub const LEASE_EXPIRED: &str = "LEASE_EXPIRED";

/// The delay before the next attempt, or `None` when the attempts are used up.
/// `attempt` is the 1-based number of the attempt that just failed.
pub fn retry_delay(
    policy: Option<&RetryPolicy>,
    attempt: i32,
    max_attempts: i32,
    retry_after_ms: Option<i64>,
) -> Option<Duration> {
    if attempt >= max_attempts {
        return None;
    }
    if let Some(ms) = retry_after_ms.filter(|ms| *ms > 0) {
        return Some(Duration::from_millis(ms.unsigned_abs()));
    }
    let initial = policy.map_or(1000, |p| {
        if p.initial_delay_ms > 0 {
            p.initial_delay_ms
        } else {
            1000
        }
    });
    let factor = policy.map_or(2.0, |p| {
        if p.backoff_factor > 0.0 {
            p.backoff_factor
        } else {
            2.0
        }
    });
    let max = policy.map_or(300_000, |p| {
        if p.max_delay_ms > 0 {
            p.max_delay_ms
        } else {
            300_000
        }
    });
    let exponent = (attempt - 1).clamp(0, 62);
    let delay = f64::from(initial) * factor.powi(exponent);
    Some(Duration::from_millis(
        delay.min(f64::from(max)).max(0.0) as u64
    ))
}

/// Parses the SDK's duration strings: `500ms`, `90s`, `2m`, `1.5h`, `7d`.
const MAX_DURATION_SECS: f64 = 100.0 * 365.0 * 86_400.0;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration '{text}' has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("duration '{text}' is not a number with a unit"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "duration '{text}' has unknown unit '{other}' (use ms, s, m, h, d)"
            ));
        }
    };
    // Beyond 100 years is a mistake, and `Duration::from_secs_f64` would panic far beyond.
    if !seconds.is_finite() || !(0.0..=MAX_DURATION_SECS).contains(&seconds) {
        return Err(format!(
            "duration '{text}' is out of range (0 to 100 years)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The readable name inside a step id `<run>:<name>:<n>` (escapes kept as sent).
pub fn step_name(run_id: &str, step_id: &str) -> String {
    let rest = step_id
        .strip_prefix(run_id)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(step_id);
    rest.rsplit_once(':')
        .map_or(rest, |(name, _)| name)
        .to_owned()
}

/// Reads a dotted path (`data.order.id`, with or without a leading `event.`) from an event
/// object `{name, data, …}`.
pub fn lookup_path<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.strip_prefix("event.").unwrap_or(path);
    path.split('.').try_fold(event, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_decides_by_what_is_due() {
        let now = Ts::now();
        let past = Ts(now.0 - chrono::Duration::seconds(1));
        let future = Ts(now.0 + chrono::Duration::seconds(60));
        let job = |leased, parked, due_at, timeout_at, lease_expires_at| TimerFacts {
            leased,
            parked,
            due_at,
            timeout_at,
            lease_expires_at,
        };
        let cases = [
            (
                job(true, false, past, None, Some(past)),
                Some(TimerAction::LeaseExpired),
            ),
            (job(true, false, past, None, Some(future)), None),
            (
                job(true, false, past, Some(past), Some(past)),
                Some(TimerAction::RunTimeout),
            ),
            (
                job(false, true, past, None, None),
                Some(TimerAction::ParkedDeadline),
            ),
            (job(false, true, future, None, None), None),
            (
                job(false, true, future, Some(past), None),
                Some(TimerAction::RunTimeout),
            ),
            // A queued job is claimed, not fired; its due time is the claim's business.
            (job(false, false, past, None, None), None),
            (job(false, false, past, Some(future), None), None),
        ];
        for (facts, expected) in cases {
            assert_eq!(timer_action(&facts, now), expected, "{facts:?}");
        }
        assert_eq!(lease_expired_error(2)["code"], LEASE_EXPIRED);
        assert_eq!(lease_expired_error(2)["retryable"], true);
    }

    #[test]
    fn durations_parse_like_the_sdk_writes_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5y").is_err());
        // Far beyond any sane sleep: an error, not a panic in `Duration::from_secs_f64`.
        assert!(parse_duration("100000000000000000000000s").is_err());
        assert!(parse_duration("36501d").is_err());
    }

    #[test]
    fn retries_back_off_and_stop() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 100,
            backoff_factor: 2.0,
            max_delay_ms: 1000,
            on_exhausted: String::new(),
        };
        assert_eq!(
            retry_delay(Some(&p), 1, 3, None),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            retry_delay(Some(&p), 2, 3, None),
            Some(Duration::from_millis(200))
        );
        assert_eq!(retry_delay(Some(&p), 3, 3, None), None);
        assert_eq!(
            retry_delay(Some(&p), 1, 3, Some(5000)),
            Some(Duration::from_millis(5000))
        );
        let big = RetryPolicy {
            max_attempts: 50,
            ..p
        };
        assert_eq!(
            retry_delay(Some(&big), 40, 50, None),
            Some(Duration::from_millis(1000))
        );
    }

    #[test]
    fn paths_read_event_fields() {
        let ev = serde_json::json!({"name": "a", "data": {"order": {"id": 7}}});
        assert_eq!(
            lookup_path(&ev, "data.order.id"),
            Some(&serde_json::json!(7))
        );
        assert_eq!(
            lookup_path(&ev, "event.data.order.id"),
            Some(&serde_json::json!(7))
        );
        assert_eq!(lookup_path(&ev, "data.missing"), None);
    }

    proptest::proptest! {
        /// Durations parse or are refused, never panic (no overflow in the conversion).
        #[test]
        fn durations_never_panic(text in "[0-9.eE+-]{0,25}(ms|s|m|h|d|y)?") {
            let _ = parse_duration(&text);
        }

        /// Retry delays never overflow and never exceed the policy's cap.
        #[test]
        fn retry_delays_stay_capped(attempt in -5i32..10_000, max_attempts in 0i32..20_000,
            initial in -10i32..1_000_000, factor in -1.0f64..1e6, max in -10i32..10_000_000) {
            let policy = RetryPolicy { max_attempts, initial_delay_ms: initial, backoff_factor: factor, max_delay_ms: max, on_exhausted: String::new() };
            if let Some(delay) = retry_delay(Some(&policy), attempt, max_attempts, None) {
                let cap = if max > 0 { max } else { 300_000 };
                proptest::prop_assert!(delay.as_millis() <= u128::try_from(cap).unwrap_or(0));
            }
        }
    }
}
