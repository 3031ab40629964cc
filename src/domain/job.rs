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

/// How long a `wait_for_event` waits when the worker names no timeout.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);
/// How long an `invoke` waits for its child when the worker names no timeout.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The delay before the next attempt, or `None` when the attempts are used up.
/// `attempt` is the 1-based number of the attempt that just failed. A worker's retry-after
/// hint replaces the backoff but is capped at the policy's `max_delay_ms`, as the SDKs
/// document (a 1 h hint on a policy with a 1 s maximum waits 1 s).
pub fn retry_delay(
    policy: Option<&RetryPolicy>,
    attempt: i32,
    max_attempts: i32,
    retry_after_ms: Option<i64>,
) -> Option<Duration> {
    if attempt >= max_attempts {
        return None;
    }
    let or_default = |value: i32, default: i32| if value > 0 { value } else { default };
    let initial = policy.map_or(RetryPolicy::DEFAULT_INITIAL_DELAY_MS, |p| {
        or_default(p.initial_delay_ms, RetryPolicy::DEFAULT_INITIAL_DELAY_MS)
    });
    let factor = policy.map_or(RetryPolicy::DEFAULT_BACKOFF_FACTOR, |p| {
        if p.backoff_factor > 0.0 {
            p.backoff_factor
        } else {
            RetryPolicy::DEFAULT_BACKOFF_FACTOR
        }
    });
    let max = policy.map_or(RetryPolicy::DEFAULT_MAX_DELAY_MS, |p| {
        or_default(p.max_delay_ms, RetryPolicy::DEFAULT_MAX_DELAY_MS)
    });
    let max_ms = u64::from(max.unsigned_abs());
    if let Some(ms) = retry_after_ms.filter(|ms| *ms > 0) {
        return Some(Duration::from_millis(ms.unsigned_abs().min(max_ms)));
    }
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
    fn a_retry_after_hint_is_capped_at_the_policy_maximum() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_delay_ms: 100,
            backoff_factor: 2.0,
            max_delay_ms: 1000,
            on_exhausted: String::new(),
        };
        let hour = Some(3_600_000);
        assert_eq!(
            retry_delay(Some(&policy), 1, 5, hour),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(
            retry_delay(Some(&policy), 1, 5, Some(250)),
            Some(Duration::from_millis(250)),
            "a hint under the maximum is used as given"
        );
        assert_eq!(
            retry_delay(None, 1, 5, hour),
            Some(Duration::from_millis(300_000)),
            "without a policy the default maximum (5 min) caps it"
        );
        assert_eq!(retry_delay(Some(&policy), 5, 5, hour), None);
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
            Some(Duration::from_millis(1000)),
            "a retry-after hint is capped at max_delay_ms"
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
