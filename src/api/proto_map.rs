//! Mapping between Ironflow v1 proto messages and engine inputs / store records.

use pbjson_types::value::Kind;
use serde_json::Value as Json;

use crate::domain::function::{
    CancelOnDef, CircuitBreakerDef, ConcurrencyLimit, DebounceDef, ExecutionMode,
    FunctionDefinition, FunctionStatus, RetryPolicy, ThrottleDef, TriggerDef,
};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::engine::{EmitEvent, RegisterFunction};
use crate::ids::FunctionId;
use crate::proto::v1 as pb;
use crate::store::functions::FunctionRecord;
use crate::store::runs::{RunRecord, StepRecord};

use super::error::ApiError;

pub fn json_to_value(json: &Json) -> pbjson_types::Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

pub fn map_to_struct(map: &serde_json::Map<String, Json>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

pub fn value_to_json(value: &pbjson_types::Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Json::Object(struct_to_map(s)),
    }
}

pub fn struct_to_map(s: &pbjson_types::Struct) -> serde_json::Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// Proto numbers are doubles; keep integral values integral so JSON and CEL see `5`, not `5.0`.
fn number_to_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Json::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

/// A JSON payload as the (Struct, Value) pair the proto carries: Struct when it is an object.
fn payload_pair(json: &Json) -> (Option<pbjson_types::Struct>, Option<pbjson_types::Value>) {
    let value = Some(json_to_value(json));
    match json {
        Json::Object(map) => (Some(map_to_struct(map)), value),
        _ => (None, value),
    }
}

pub fn timestamp(ts: Ts) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp::from(ts.0)
}

pub fn from_timestamp(ts: &pbjson_types::Timestamp, field: &str) -> Result<Ts, ApiError> {
    let nanos =
        u32::try_from(ts.nanos).map_err(|_| ApiError::invalid(format!("{field}: bad nanos")))?;
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
        .map(Ts)
        .ok_or_else(|| ApiError::invalid(format!("{field}: timestamp out of range")))
}

pub fn register_request(req: pb::RegisterFunctionRequest) -> Result<RegisterFunction, ApiError> {
    let id = FunctionId::parse(&req.id).map_err(|e| ApiError::invalid(format!("id: {e}")))?;
    let mode = match pb::ExecutionMode::try_from(req.preferred_mode) {
        Ok(pb::ExecutionMode::Push) => ExecutionMode::Push,
        Ok(pb::ExecutionMode::Pull | pb::ExecutionMode::Unspecified) => ExecutionMode::Pull,
        Err(_) => {
            return Err(ApiError::invalid(format!(
                "preferred_mode: unknown execution mode {}",
                req.preferred_mode
            )));
        }
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let definition = FunctionDefinition {
        name: req.name,
        description: req.description,
        triggers: req
            .triggers
            .into_iter()
            .map(|t| TriggerDef {
                event: non_empty(t.event),
                expression: non_empty(t.expression),
                cron: non_empty(t.cron),
            })
            .collect(),
        retry: req.retry.map(|r| RetryPolicy {
            max_attempts: r.max_attempts,
            initial_delay_ms: r.initial_delay_ms,
            backoff_factor: r.backoff_factor,
            max_delay_ms: r.max_delay_ms,
            on_exhausted: r.on_exhausted,
        }),
        timeout_ms: req.timeout_ms,
        concurrency: req.concurrency.map(|c| ConcurrencyLimit {
            limit: c.limit,
            key: c.key,
        }),
        mode,
        endpoint_url: req.endpoint_url,
        actor_key: req.actor_key,
        secrets: req.secrets,
        recording: req.recording,
        recording_profile: req.recording_profile,
        metadata: req.metadata.as_ref().map(struct_to_map).unwrap_or_default(),
        debounce: req.debounce.map(|d| DebounceDef {
            period_ms: d.period_ms,
            key: d.key,
            max_wait_ms: d.max_wait_ms,
        }),
        cancel_on: req
            .cancel_on
            .into_iter()
            .map(|c| CancelOnDef {
                event: c.event,
                r#match: c.r#match,
            })
            .collect(),
        circuit_breaker: req.circuit_breaker.map(|c| CircuitBreakerDef {
            failure_threshold: c.failure_threshold,
            open_duration_ms: c.open_duration_ms,
            max_open_duration_ms: c.max_open_duration_ms,
        }),
        throttle: req.throttle.map(|t| ThrottleDef {
            limit: t.limit,
            period_ms: t.period_ms,
            key: t.key,
        }),
    };
    Ok(RegisterFunction {
        id,
        definition,
        change_reason: req.change_reason,
    })
}

pub fn function(record: &FunctionRecord) -> pb::Function {
    let d = &record.definition;
    pb::Function {
        id: record.id.to_string(),
        name: d.name.clone(),
        description: d.description.clone(),
        triggers: d
            .triggers
            .iter()
            .map(|t| pb::Trigger {
                event: t.event.clone().unwrap_or_default(),
                expression: t.expression.clone().unwrap_or_default(),
                cron: t.cron.clone().unwrap_or_default(),
            })
            .collect(),
        retry: d.retry.as_ref().map(|r| pb::RetryConfig {
            max_attempts: r.max_attempts,
            initial_delay_ms: r.initial_delay_ms,
            backoff_factor: r.backoff_factor,
            max_delay_ms: r.max_delay_ms,
            on_exhausted: r.on_exhausted.clone(),
        }),
        timeout_ms: d.timeout_ms,
        concurrency: d.concurrency.as_ref().map(|c| pb::ConcurrencyConfig {
            limit: c.limit,
            key: c.key.clone(),
        }),
        preferred_mode: match d.mode {
            ExecutionMode::Pull => pb::ExecutionMode::Pull,
            ExecutionMode::Push => pb::ExecutionMode::Push,
        } as i32,
        endpoint_url: d.endpoint_url.clone(),
        actor_key: d.actor_key.clone(),
        status: function_status(record.status) as i32,
        version: record.version,
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        recording: d.recording,
        recording_profile: d.recording_profile.clone(),
        next_run: None,
        metadata: Some(map_to_struct(&d.metadata)),
        debounce: d.debounce.as_ref().map(|x| pb::DebounceConfig {
            period_ms: x.period_ms,
            key: x.key.clone(),
            max_wait_ms: x.max_wait_ms,
        }),
        cancel_on: d
            .cancel_on
            .iter()
            .map(|c| pb::CancelOnSpec {
                event: c.event.clone(),
                r#match: c.r#match.clone(),
            })
            .collect(),
        circuit_breaker: d
            .circuit_breaker
            .as_ref()
            .map(|c| pb::CircuitBreakerConfig {
                failure_threshold: c.failure_threshold,
                open_duration_ms: c.open_duration_ms,
                max_open_duration_ms: c.max_open_duration_ms,
            }),
        throttle: d.throttle.as_ref().map(|t| pb::ThrottleConfig {
            limit: t.limit,
            period_ms: t.period_ms,
            key: t.key.clone(),
        }),
    }
}

pub fn function_status(status: FunctionStatus) -> pb::FunctionStatus {
    match status {
        FunctionStatus::Active => pb::FunctionStatus::Active,
        FunctionStatus::Paused => pb::FunctionStatus::Paused,
        FunctionStatus::Archived => pb::FunctionStatus::Archived,
    }
}

pub fn parse_function_status(value: i32) -> Result<Option<FunctionStatus>, ApiError> {
    match pb::FunctionStatus::try_from(value) {
        Ok(pb::FunctionStatus::Unspecified) => Ok(None),
        Ok(pb::FunctionStatus::Active) => Ok(Some(FunctionStatus::Active)),
        Ok(pb::FunctionStatus::Paused) => Ok(Some(FunctionStatus::Paused)),
        Ok(pb::FunctionStatus::Archived) => Ok(Some(FunctionStatus::Archived)),
        Err(_) => Err(ApiError::invalid(format!(
            "status: unknown function status {value}"
        ))),
    }
}

pub fn run_status(status: RunStatus) -> pb::RunStatus {
    match status {
        RunStatus::Running => pb::RunStatus::Running,
        RunStatus::Completed => pb::RunStatus::Completed,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Cancelled => pb::RunStatus::Cancelled,
        RunStatus::Paused => pb::RunStatus::Paused,
        RunStatus::WaitingForCapacity => pb::RunStatus::WaitingForCapacity,
        RunStatus::Waiting => pb::RunStatus::Waiting,
    }
}

pub fn parse_run_status(value: i32) -> Result<Option<RunStatus>, ApiError> {
    let status = pb::RunStatus::try_from(value)
        .map_err(|_| ApiError::invalid(format!("status: unknown run status {value}")))?;
    Ok(match status {
        pb::RunStatus::Unspecified => None,
        pb::RunStatus::Running => Some(RunStatus::Running),
        pb::RunStatus::Completed => Some(RunStatus::Completed),
        pb::RunStatus::Failed => Some(RunStatus::Failed),
        pb::RunStatus::Cancelled => Some(RunStatus::Cancelled),
        pb::RunStatus::Paused => Some(RunStatus::Paused),
        pb::RunStatus::WaitingForCapacity => Some(RunStatus::WaitingForCapacity),
        pb::RunStatus::Waiting => Some(RunStatus::Waiting),
    })
}

fn error(json: &Json) -> pb::Error {
    let text = |k: &str| {
        json.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    pb::Error {
        message: text("message"),
        code: text("code"),
        stack: text("stack"),
        retryable: json
            .get("retryable")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        details: json
            .get("details")
            .and_then(Json::as_object)
            .map(map_to_struct),
        retry_after_ms: json
            .get("retry_after_ms")
            .and_then(Json::as_i64)
            .unwrap_or(0),
    }
}

pub fn run(record: &RunRecord) -> pb::Run {
    let (input, input_value) = payload_pair(&record.input);
    let (output, output_value) = record.output.as_ref().map(payload_pair).unwrap_or_default();
    pb::Run {
        id: record.id.to_string(),
        function_id: record.function_id.to_string(),
        event_id: record
            .event_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        execution_mode: pb::ExecutionMode::Unspecified as i32,
        input,
        input_value,
        output,
        output_value,
        error: record.error.as_ref().map(error),
        error_value: record.error.as_ref().map(json_to_value),
        status: run_status(record.status) as i32,
        attempt: record.attempt,
        max_attempts: record.max_attempts,
        started_at: record.started_at.map(timestamp),
        ended_at: record.ended_at.map(timestamp),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        function_version: record.function_version,
        parent_run_id: record
            .parent_run_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        environment_id: record.env_id.to_string(),
        cancellation_cause: record.cancellation_cause.clone().unwrap_or_default(),
        event_name: record.event_name.clone().unwrap_or_default(),
        pause_requested: record.pause_requested,
        pause_reason: record.pause_reason.clone().unwrap_or_default(),
        resume_from_step: record.resume_from_step.clone().unwrap_or_default(),
        parent_step_id: String::new(),
        ..pb::Run::default()
    }
}

pub fn step(record: &StepRecord) -> pb::Step {
    let (output, output_value) = record.output.as_ref().map(payload_pair).unwrap_or_default();
    let status = match record.status.as_str() {
        "pending" => pb::StepStatus::Pending,
        "running" => pb::StepStatus::Running,
        "completed" => pb::StepStatus::Completed,
        "failed" => pb::StepStatus::Failed,
        "sleeping" => pb::StepStatus::Sleeping,
        "waiting" => pb::StepStatus::Waiting,
        "timed_out" => pb::StepStatus::TimedOut,
        "retrying" => pb::StepStatus::Retrying,
        "dead" => pb::StepStatus::Dead,
        _ => pb::StepStatus::Unspecified,
    };
    let duration = match (record.started_at, record.ended_at) {
        (Some(s), Some(e)) => Some((e.0 - s.0).num_milliseconds()),
        _ => None,
    };
    pb::Step {
        id: format!("{}:{}", record.run_id, record.step_id),
        run_id: record.run_id.to_string(),
        step_id: record.step_id.clone(),
        sequence: record.sequence,
        status: status as i32,
        output,
        output_value,
        error: record.error.as_ref().map(error),
        error_value: record.error.as_ref().map(json_to_value),
        attempt: record.attempt,
        duration_ms: duration.map_or(0, |d| i32::try_from(d).unwrap_or(i32::MAX)),
        duration_ms_full: duration,
        started_at: record.started_at.map(timestamp),
        ended_at: record.ended_at.map(timestamp),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        stored_status: record.status.clone(),
        original_output: record
            .original_output
            .as_ref()
            .and_then(|o| payload_pair(o).0),
        original_output_value: record.original_output.as_ref().map(json_to_value),
        patched_at: record.patched_at.map(timestamp),
        patched_by: record.patched_by.clone().unwrap_or_default(),
        ..pb::Step::default()
    }
}

/// A payload sent as the proto (`data` Struct, `data_value` Value) pair: `data_value` wins
/// when both are set; neither is an empty object.
pub fn payload_json(
    data: Option<&pbjson_types::Struct>,
    data_value: Option<&pbjson_types::Value>,
) -> Json {
    match (data_value, data) {
        (Some(v), _) => value_to_json(v),
        (None, Some(s)) => Json::Object(struct_to_map(s)),
        (None, None) => Json::Object(serde_json::Map::new()),
    }
}

/// `TriggerRequest` → an event to emit.
pub fn emit_request(req: pb::TriggerRequest, source: &str) -> EmitEvent {
    EmitEvent {
        data: payload_json(req.data.as_ref(), req.data_value.as_ref()),
        name: req.event,
        metadata: Json::Object(req.metadata.as_ref().map(struct_to_map).unwrap_or_default()),
        idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key),
        source: source.to_owned(),
        version: req.version,
        emitted_by_run: None,
    }
}

/// One `RunResult` per run a sync call started. A run still going when the wait ended has
/// `wait_timed_out` and an error saying so; it keeps running.
pub fn run_results(outcome: &crate::engine::SyncOutcome) -> Vec<pb::RunResult> {
    outcome
        .runs
        .iter()
        .map(|r| {
            let still_running = outcome.still_running_message(&r.id);
            let timed_out = still_running.is_some();
            let (output, output_value) = r.output.as_ref().map(payload_pair).unwrap_or_default();
            let error = match still_running {
                Some(message) => Some(pb::Error {
                    message,
                    code: "WAIT_TIMEOUT".into(),
                    ..pb::Error::default()
                }),
                None => r.error.as_ref().map(error),
            };
            let duration = r
                .ended_at
                .map_or(0, |end| (end.0 - r.created_at.0).num_milliseconds());
            pb::RunResult {
                run_id: r.id.to_string(),
                function_id: r.function_id.to_string(),
                status: run_status(r.status) as i32,
                output,
                output_value,
                error,
                duration_ms: i32::try_from(duration).unwrap_or(i32::MAX),
                wait_timed_out: timed_out,
            }
        })
        .collect()
}
