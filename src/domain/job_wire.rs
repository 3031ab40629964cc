//! The JSON shapes of job results as ironflow-py writes them — the steps, error and yield of a
//! pull worker's report and of a push endpoint's response — parsed into the domain's
//! [`ReportedStep`], [`JobFailure`] and [`YieldRequest`] once, for both transports.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::domain::job::{JobFailure, ReportOutcome, ReportedStep, YieldRequest, parse_duration};
use crate::domain::time::Ts;

/// A result body that does not have the protocol's shape; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

#[derive(Debug, Deserialize)]
pub struct StepBody {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    step_type: Option<String>,
    status: String,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    ended_at: Option<String>,
    #[serde(default)]
    compensation_for: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default)]
    retry_after_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct EventFilterBody {
    event: String,
    #[serde(default, rename = "match")]
    match_path: Option<String>,
    #[serde(default)]
    match_value: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct YieldBody {
    step_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    event_filter: Option<EventFilterBody>,
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    invoke_timeout_ms: Option<u64>,
}

/// What a push endpoint answers with 200 (`ironflow/serve/_handler.py`).
#[derive(Debug, Deserialize)]
pub struct PushResponseBody {
    status: String,
    #[serde(default)]
    steps: Vec<StepBody>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default, rename = "yield")]
    yielded: Option<YieldBody>,
}

pub fn parse_time(field: &str, value: Option<String>) -> Result<Option<Ts>, WireError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| Ts(t.with_timezone(&chrono::Utc)))
                .map_err(|_| WireError(format!("{field}: '{v}' is not an RFC 3339 time")))
        })
        .transpose()
}

pub fn parse_steps(steps: Vec<StepBody>) -> Result<Vec<ReportedStep>, WireError> {
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let completed = match s.status.as_str() {
            "completed" => true,
            "failed" => false,
            other => {
                return Err(WireError(format!(
                    "steps[].status must be completed or failed, not '{other}'"
                )));
            }
        };
        out.push(ReportedStep {
            started_at: parse_time("steps[].started_at", s.started_at)?,
            ended_at: parse_time("steps[].ended_at", s.ended_at)?,
            id: s.id,
            name: s.name,
            step_type: s.step_type.unwrap_or_else(|| "invoke".into()),
            completed,
            output: if completed {
                Some(s.output.unwrap_or(Value::Null))
            } else {
                None
            },
            error: s.error,
            compensation_for: s.compensation_for,
        });
    }
    Ok(out)
}

pub fn parse_failure(e: ErrorBody) -> JobFailure {
    JobFailure {
        message: e.message,
        code: if e.code.is_empty() {
            "ERROR".into()
        } else {
            e.code
        },
        retryable: e.retryable.unwrap_or(true),
        retry_after_ms: e.retry_after_ms,
    }
}

pub fn parse_yield(y: YieldBody) -> Result<YieldRequest, WireError> {
    let need = |v: Option<String>, what: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| WireError(format!("yield.{what} is required for {}", y.kind)))
    };
    Ok(match y.kind.as_str() {
        "sleep" => YieldRequest::Sleep {
            until: parse_time("yield.until", Some(need(y.until.clone(), "until")?))?
                .unwrap_or_else(Ts::now),
            step_id: y.step_id,
        },
        "wait_for_event" => {
            let f = y.event_filter.ok_or_else(|| {
                WireError("yield.event_filter is required for wait_for_event".into())
            })?;
            let timeout = match f.timeout.as_deref() {
                Some(t) => parse_duration(t)
                    .map_err(|e| WireError(format!("yield.event_filter.timeout: {e}")))?,
                None => crate::domain::job::DEFAULT_WAIT_TIMEOUT,
            };
            YieldRequest::WaitForEvent {
                step_id: y.step_id,
                event: f.event,
                match_path: f.match_path.filter(|m| !m.is_empty()),
                match_value: f.match_value,
                timeout,
            }
        }
        "invoke_function" => YieldRequest::Invoke {
            function_id: need(y.function_id.clone(), "function_id")?,
            input: y.input.unwrap_or(Value::Null),
            timeout: y.invoke_timeout_ms.map_or(
                crate::domain::job::DEFAULT_INVOKE_TIMEOUT,
                Duration::from_millis,
            ),
            step_id: y.step_id,
        },
        "invoke_function_async" => YieldRequest::InvokeAsync {
            function_id: need(y.function_id.clone(), "function_id")?,
            input: y.input.unwrap_or(Value::Null),
            step_id: y.step_id,
        },
        other => return Err(WireError(format!("unknown yield type '{other}'"))),
    })
}

/// Parses a push endpoint's 200 body into the steps it ran and the outcome.
pub fn parse_push_response(body: &[u8]) -> Result<(Vec<ReportedStep>, ReportOutcome), WireError> {
    let body: PushResponseBody = serde_json::from_slice(body)
        .map_err(|e| WireError(format!("the endpoint's response is not a push result: {e}")))?;
    let steps = parse_steps(body.steps)?;
    let outcome = match body.status.as_str() {
        "completed" => ReportOutcome::Completed {
            output: body.result.or(body.output).unwrap_or(Value::Null),
        },
        "failed" => ReportOutcome::Failed(parse_failure(
            body.error
                .ok_or_else(|| WireError("a failed result needs an error".into()))?,
        )),
        "yielded" => ReportOutcome::Yielded(parse_yield(
            body.yielded
                .ok_or_else(|| WireError("a yielded result needs a yield".into()))?,
        )?),
        other => {
            return Err(WireError(format!(
                "status must be completed, failed or yielded, not '{other}'"
            )));
        }
    };
    Ok((steps, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_results_parse_like_serve_writes_them() {
        let done = br#"{"status":"completed","result":{"ok":1},"steps":[{"id":"r:a:0","name":"a","type":"invoke","status":"completed","output":2,"started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:01Z","duration_ms":1000}]}"#;
        let (steps, outcome) = parse_push_response(done).expect("parses");
        assert_eq!(steps.len(), 1);
        assert!(
            matches!(outcome, ReportOutcome::Completed { output } if output == serde_json::json!({"ok": 1}))
        );
        let slept = br#"{"status":"yielded","steps":[],"yield":{"step_id":"r:nap:0","type":"sleep","until":"2026-01-01T00:00:00.000Z"}}"#;
        assert!(matches!(
            parse_push_response(slept).expect("parses").1,
            ReportOutcome::Yielded(YieldRequest::Sleep { .. })
        ));
        let failed =
            br#"{"status":"failed","steps":[],"error":{"message":"x","code":"E","retryable":false}}"#;
        assert!(matches!(
            parse_push_response(failed).expect("parses").1,
            ReportOutcome::Failed(JobFailure {
                retryable: false,
                ..
            })
        ));
        assert!(parse_push_response(b"<html>").is_err());
        assert!(parse_push_response(br#"{"status":"done"}"#).is_err());
    }
}
