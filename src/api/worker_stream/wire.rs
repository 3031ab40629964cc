//! The worker stream's messages ↔ the domain's job types: what a report says (steps, a yield,
//! a failure) and what an assignment carries (the event, the memoized steps), mapped once for
//! both transports. Pure functions; a message that breaks the protocol is a [`WireError`]
//! naming the field.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::proto_map::{from_timestamp, json_to_value, map_to_struct, payload_json};
use crate::domain::job::{
    DEFAULT_INVOKE_TIMEOUT, DEFAULT_WAIT_TIMEOUT, JobFailure, ReportedStep, YieldRequest,
};
use crate::domain::job_wire::WireError;
use crate::domain::time::Ts;
use crate::proto::v1 as pb;
use crate::store::execution::ClaimedJob;

/// A step's name and type as `step_started` announced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLabel {
    pub name: String,
    pub step_type: String,
}

/// The history's name for a proto step type (the REST protocol's `type` strings).
pub fn step_type_name(step_type: i32) -> &'static str {
    match pb::StepType::try_from(step_type).unwrap_or(pb::StepType::Unspecified) {
        pb::StepType::Sleep => "sleep",
        pb::StepType::WaitForEvent => "wait_for_event",
        pb::StepType::Compensate => "compensate",
        pb::StepType::InvokeFunction => "invoke_function",
        pb::StepType::Invoke | pb::StepType::Unspecified => "invoke",
    }
}

/// A (Struct, Value) payload pair as JSON: `*_value` wins; neither is null (a step or run
/// output, unlike event data, may be absent).
pub fn payload(s: Option<&pbjson_types::Struct>, v: Option<&pbjson_types::Value>) -> Value {
    if s.is_none() && v.is_none() {
        return Value::Null;
    }
    payload_json(s, v)
}

/// The stored JSON of a step error: the message, the code when there is one, and whether a
/// retry may run the step again (the REST protocol's shape).
pub fn error_json(e: &pb::Error) -> Value {
    let mut out = Map::new();
    out.insert("message".into(), Value::String(e.message.clone()));
    if !e.code.is_empty() {
        out.insert("code".into(), Value::String(e.code.clone()));
    }
    out.insert("retryable".into(), Value::Bool(e.retryable));
    Value::Object(out)
}

/// `end - duration_ms`: the stream carries a step's duration, the server stamps its end.
fn span(ended_at: Ts, duration_ms: i32) -> (Option<Ts>, Option<Ts>) {
    let started = ended_at.0 - chrono::Duration::milliseconds(i64::from(duration_ms.max(0)));
    (Some(Ts(started)), Some(ended_at))
}

fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, WireError> {
    if value.is_empty() {
        Err(WireError(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// `step_completed`, under the label `step_started` gave it (the step id when none came).
pub fn completed_step(
    s: &pb::StepCompleted,
    label: Option<&StepLabel>,
    now: Ts,
) -> Result<ReportedStep, WireError> {
    let id = required("step_completed.step_id", &s.step_id)?;
    let (started_at, ended_at) = span(now, s.duration_ms);
    Ok(ReportedStep {
        id: id.to_owned(),
        name: label.map_or_else(|| id.to_owned(), |l| l.name.clone()),
        step_type: label.map_or_else(|| "invoke".into(), |l| l.step_type.clone()),
        completed: true,
        output: Some(payload(s.output.as_ref(), s.output_value.as_ref())),
        error: None,
        started_at,
        ended_at,
        compensation_for: None,
    })
}

/// `step_failed`: a step that raised. A retryable failure is history only (the next attempt
/// runs the step again); a non-retryable one is what a replay returns.
pub fn failed_step(
    s: &pb::StepFailed,
    label: Option<&StepLabel>,
    now: Ts,
) -> Result<ReportedStep, WireError> {
    let id = required("step_failed.step_id", &s.step_id)?;
    let error = s
        .error
        .as_ref()
        .ok_or_else(|| WireError("step_failed.error is required".into()))?;
    let (started_at, ended_at) = span(now, s.duration_ms);
    Ok(ReportedStep {
        id: id.to_owned(),
        name: label.map_or_else(|| id.to_owned(), |l| l.name.clone()),
        step_type: label.map_or_else(|| "invoke".into(), |l| l.step_type.clone()),
        completed: false,
        output: None,
        error: Some(error_json(error)),
        started_at,
        ended_at,
        compensation_for: None,
    })
}

/// A step `job_failed` carries (the compensations that ran before the failure was final).
pub fn executed_step(s: &pb::ExecutedStep, now: Ts) -> Result<ReportedStep, WireError> {
    let id = required("job_failed.steps[].id", &s.id)?;
    let completed = match s.status.as_str() {
        "completed" => true,
        "failed" => false,
        other => {
            return Err(WireError(format!(
                "job_failed.steps[].status must be completed or failed, not '{other}'"
            )));
        }
    };
    let (started_at, ended_at) = span(now, s.duration_ms);
    Ok(ReportedStep {
        id: id.to_owned(),
        name: if s.name.is_empty() {
            id.to_owned()
        } else {
            s.name.clone()
        },
        step_type: if s.r#type.is_empty() {
            "invoke".into()
        } else {
            s.r#type.clone()
        },
        completed,
        output: completed.then(|| payload(s.output.as_ref(), s.output_value.as_ref())),
        error: s.error.as_ref().map(error_json),
        started_at,
        ended_at,
        compensation_for: Some(s.compensation_for.clone()).filter(|c| !c.is_empty()),
    })
}

/// Why a job failed; a missing error is a retryable failure saying so.
pub fn failure(error: Option<&pb::Error>) -> JobFailure {
    match error {
        Some(e) => JobFailure {
            message: e.message.clone(),
            code: if e.code.is_empty() {
                "ERROR".into()
            } else {
                e.code.clone()
            },
            retryable: e.retryable,
            retry_after_ms: (e.retry_after_ms > 0).then_some(e.retry_after_ms),
        },
        None => JobFailure {
            message: "the worker reported a failure without an error".into(),
            code: "ERROR".into(),
            retryable: true,
            retry_after_ms: None,
        },
    }
}

fn timestamp(ts: &pbjson_types::Timestamp, field: &str) -> Result<Ts, WireError> {
    from_timestamp(ts, field).map_err(|e| WireError(e.message))
}

/// JSON bytes; empty is null.
fn json_bytes(field: &str, bytes: &[u8]) -> Result<Value, WireError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| WireError(format!("{field} is not JSON: {e}")))
}

/// `step_yielded`: what the run waits for. The wait's timeout is a deadline on the wire and a
/// duration in the domain (from `now`; a deadline already passed times out at once).
pub fn yield_request(y: &pb::StepYielded, now: Ts) -> Result<YieldRequest, WireError> {
    use pb::step_yielded::YieldInfo;
    let step_id = required("step_yielded.step_id", &y.step_id)?.to_owned();
    Ok(match &y.yield_info {
        Some(YieldInfo::Sleep(s)) => YieldRequest::Sleep {
            step_id,
            until: s
                .until
                .as_ref()
                .map(|t| timestamp(t, "step_yielded.sleep.until"))
                .transpose()?
                .unwrap_or(now),
        },
        Some(YieldInfo::WaitEvent(w)) => YieldRequest::WaitForEvent {
            step_id,
            event: required("step_yielded.wait_event.event_name", &w.event_name)?.to_owned(),
            match_path: Some(w.match_expression.clone()).filter(|m| !m.is_empty()),
            match_value: Some(w.match_value.clone()).filter(|m| !m.is_empty()),
            timeout: match &w.timeout {
                Some(t) => {
                    let deadline = timestamp(t, "step_yielded.wait_event.timeout")?;
                    (deadline.0 - now.0).to_std().unwrap_or(Duration::ZERO)
                }
                None => DEFAULT_WAIT_TIMEOUT,
            },
        },
        Some(YieldInfo::InvokeFunction(i)) => YieldRequest::Invoke {
            step_id,
            function_id: required("step_yielded.invoke_function.function_id", &i.function_id)?
                .to_owned(),
            input: json_bytes("step_yielded.invoke_function.input_json", &i.input_json)?,
            timeout: match i.invoke_timeout_ms {
                0 => DEFAULT_INVOKE_TIMEOUT,
                ms if ms < 0 => {
                    return Err(WireError(
                        "step_yielded.invoke_function.invoke_timeout_ms must not be negative"
                            .into(),
                    ));
                }
                ms => Duration::from_millis(ms.unsigned_abs()),
            },
        },
        Some(YieldInfo::InvokeFunctionAsync(i)) => YieldRequest::InvokeAsync {
            step_id,
            function_id: required(
                "step_yielded.invoke_function_async.function_id",
                &i.function_id,
            )?
            .to_owned(),
            input: json_bytes(
                "step_yielded.invoke_function_async.input_json",
                &i.input_json,
            )?,
        },
        None => {
            return Err(WireError(
                "step_yielded needs one of sleep, wait_event, invoke_function, invoke_function_async"
                    .into(),
            ));
        }
    })
}

/// The triggering event (`ClaimedJob::event_json`, the shape both job protocols share) as
/// the proto `Event`.
fn event(json: &Value) -> pb::Event {
    let text = |k: &str| {
        json.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    pb::Event {
        id: text("id"),
        name: text("name"),
        data: None,
        data_value: Some(json_to_value(json.get("data").unwrap_or(&Value::Null))),
        idempotency_key: text("idempotency_key"),
        source: text("source"),
        timestamp: json
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| pbjson_types::Timestamp::from(t.with_timezone(&chrono::Utc))),
        metadata: json
            .get("metadata")
            .and_then(Value::as_object)
            .map(map_to_struct),
        version: json
            .get("version")
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(1),
        ..Default::default()
    }
}

/// A claimed job as the worker receives it: the event, the steps earlier dispatches finished
/// (memo), the secrets it declared, the fence its reports must carry.
pub fn assignment(job: &ClaimedJob) -> pb::JobAssignment {
    let run = &job.run;
    pb::JobAssignment {
        job_id: job.dispatch_id.clone(),
        run_id: run.id.to_string(),
        function_id: run.function_id.to_string(),
        event: Some(event(&job.event_json())),
        completed_steps: job
            .completed_steps
            .iter()
            .map(|s| pb::CompletedStep {
                step_id: s.step_id.clone(),
                name: s.name.clone(),
                output: None,
                output_value: s.output.as_ref().map(json_to_value),
                status: s.status.clone(),
                error_json: s
                    .error
                    .as_ref()
                    .map(|e| e.to_string().into_bytes())
                    .unwrap_or_default(),
                output_json: Vec::new(),
            })
            .collect(),
        actor_id: String::new(),
        attempt: run.attempt.max(1),
        context: Some(pb::JobContext {
            trace_id: job
                .trace_context()
                .map(|(trace_id, _)| trace_id)
                .unwrap_or_default(),
            metadata: job
                .trace_context()
                .map(|(_, tp)| ("traceparent".to_owned(), tp.to_owned()))
                .into_iter()
                .collect(),
            secrets: job.secrets.clone().into_iter().collect(),
        }),
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
        lease_expires_at: Some(pbjson_types::Timestamp::from(job.lease_expires_at.0)),
        max_attempts: run.max_attempts,
        on_exhausted: job.on_exhausted(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Ts {
        Ts(chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid"))
    }

    #[test]
    fn a_completed_step_takes_its_label_and_its_span_from_the_duration() {
        let s = pb::StepCompleted {
            step_id: "r:charge:0".into(),
            output_value: Some(json_to_value(&json!({"n": 3, "ok": true}))),
            duration_ms: 1_500,
            ..Default::default()
        };
        let label = StepLabel {
            name: "charge".into(),
            step_type: "invoke".into(),
        };
        let step = completed_step(&s, Some(&label), now()).expect("valid");
        assert_eq!(step.name, "charge");
        assert_eq!(step.output, Some(json!({"n": 3, "ok": true})));
        let started = step.started_at.expect("set").0;
        assert_eq!((now().0 - started).num_milliseconds(), 1_500);
        let unlabelled = completed_step(&s, None, now()).expect("valid");
        assert_eq!(unlabelled.name, "r:charge:0");
        let missing = pb::StepCompleted::default();
        assert!(
            completed_step(&missing, None, now())
                .expect_err("no id")
                .0
                .contains("step_id")
        );
    }

    #[test]
    fn a_failed_step_keeps_whether_it_may_run_again() {
        let s = pb::StepFailed {
            step_id: "r:a:0".into(),
            error: Some(pb::Error {
                message: "boom".into(),
                code: "STEP_FAILED".into(),
                retryable: false,
                ..Default::default()
            }),
            ..Default::default()
        };
        let step = failed_step(&s, None, now()).expect("valid");
        assert!(!step.completed);
        assert_eq!(
            step.error,
            Some(json!({"message": "boom", "code": "STEP_FAILED", "retryable": false}))
        );
        let no_error = pb::StepFailed {
            step_id: "r:a:0".into(),
            ..Default::default()
        };
        assert!(failed_step(&no_error, None, now()).is_err());
    }

    #[test]
    fn yields_map_deadlines_to_durations() {
        use pb::step_yielded::YieldInfo;
        let later = Ts(now().0 + chrono::Duration::seconds(90));
        let wait = pb::StepYielded {
            step_id: "r:w:0".into(),
            yield_info: Some(YieldInfo::WaitEvent(pb::WaitEventYield {
                event_name: "order.paid".into(),
                match_expression: "data.order_id".into(),
                timeout: Some(pbjson_types::Timestamp::from(later.0)),
                ..Default::default()
            })),
            ..Default::default()
        };
        match yield_request(&wait, now()).expect("valid") {
            YieldRequest::WaitForEvent {
                timeout,
                match_path,
                match_value,
                ..
            } => {
                assert_eq!(timeout, Duration::from_secs(90));
                assert_eq!(match_path.as_deref(), Some("data.order_id"));
                assert_eq!(match_value, None);
            }
            other => panic!("not a wait: {other:?}"),
        }
        let invoke = pb::StepYielded {
            step_id: "r:i:0".into(),
            yield_info: Some(YieldInfo::InvokeFunction(pb::InvokeFunctionYield {
                function_id: "child".into(),
                input_json: br#"{"x":1}"#.to_vec(),
                invoke_timeout_ms: 0,
            })),
            ..Default::default()
        };
        assert!(matches!(
            yield_request(&invoke, now()).expect("valid"),
            YieldRequest::Invoke { input, timeout, .. }
                if input == json!({"x": 1}) && timeout == DEFAULT_INVOKE_TIMEOUT
        ));
        let bad = pb::StepYielded {
            step_id: "r:i:0".into(),
            yield_info: Some(YieldInfo::InvokeFunction(pb::InvokeFunctionYield {
                function_id: "child".into(),
                input_json: b"{nope".to_vec(),
                invoke_timeout_ms: 0,
            })),
            ..Default::default()
        };
        assert!(
            yield_request(&bad, now())
                .expect_err("bad json")
                .0
                .contains("input_json")
        );
        let empty = pb::StepYielded {
            step_id: "r:x:0".into(),
            ..Default::default()
        };
        assert!(yield_request(&empty, now()).is_err());
    }

    #[test]
    fn the_event_travels_as_the_sdk_reads_it() {
        let e = event(&json!({
            "id": "e1", "name": "order.created", "data": {"n": 1},
            "timestamp": "2026-12-04T10:00:00+00:00", "version": 2, "source": "api",
            "metadata": {"k": "v"}, "idempotency_key": "key-1",
        }));
        assert_eq!(e.name, "order.created");
        assert_eq!(
            e.data_value
                .as_ref()
                .map(crate::api::proto_map::value_to_json),
            Some(json!({"n": 1}))
        );
        assert_eq!(e.timestamp.expect("set").seconds, 1_796_378_400);
        assert_eq!(e.version, 2);
        assert_eq!(e.idempotency_key, "key-1");
        assert!(e.metadata.is_some());
    }
}
