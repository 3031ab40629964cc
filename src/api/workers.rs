//! The REST pull-worker protocol (`/api/v1/workers/{id}/…`) as ironflow-py's `Worker` speaks it:
//! register, heartbeat, long-poll for jobs, ack and report under a fence.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::job::{
    Fence, JobFailure, JobReport, ReportOutcome, ReportedStep, YieldRequest, parse_duration,
};
use crate::engine::{PollOutcome, WorkerHello};
use crate::store::model::ClaimedJob;
use crate::store::time::Ts;
use crate::tenancy::Permission;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};

#[derive(Deserialize)]
pub struct RegisterBody {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    function_ids: Vec<String>,
    #[serde(default)]
    max_concurrent_jobs: Option<i32>,
    #[serde(default)]
    labels: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
}

/// `POST|PUT /api/v1/workers/{id}/register`
pub async fn register(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(worker): Path<String>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Write)?;
    let hello = WorkerHello {
        id: worker,
        hostname: body.hostname,
        function_ids: body.function_ids,
        max_concurrent: body.max_concurrent_jobs.unwrap_or(1),
        labels: body.labels.unwrap_or_else(|| json!({})),
        version: body.version.unwrap_or_else(|| json!({})),
    };
    state.engine.register_worker(&ctx.env, hello).await?;
    Ok(Json(json!({"status": "registered"})))
}

#[derive(Deserialize)]
pub struct HeartbeatJob {
    job_id: String,
}

#[derive(Deserialize)]
pub struct HeartbeatBody {
    #[serde(default)]
    jobs: Vec<HeartbeatJob>,
}

/// `POST|PUT /api/v1/workers/{id}/heartbeat`: renews the leases of the listed jobs.
pub async fn heartbeat(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(worker): Path<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Write)?;
    let jobs: Vec<String> = body.jobs.into_iter().map(|j| j.job_id).collect();
    if state.engine.heartbeat(&ctx.env, &worker, &jobs).await? {
        Ok(Json(json!({"status": "ok"})))
    } else {
        Err(ApiError::not_found(format!(
            "worker '{worker}' is not registered; register again"
        )))
    }
}

/// `GET /api/v1/workers`
pub async fn list(
    State(state): State<AppState>,
    ctx: RequestContext,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Read)?;
    let workers = state.engine.list_workers(&ctx.env).await?;
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id, "hostname": w.hostname, "function_ids": w.function_ids,
                "max_concurrent": w.max_concurrent, "labels": w.labels, "version": w.version,
                "registered_at": w.registered_at.to_rfc3339(), "last_heartbeat": w.last_heartbeat_at.to_rfc3339(),
                "transport": "rest",
            })
        })
        .collect();
    Ok(Json(json!({"workers": workers})))
}

#[derive(Deserialize, Default)]
pub struct PollParams {
    available: Option<i64>,
    wait: Option<u64>,
}

/// `GET /api/v1/workers/{id}/jobs?available=N&wait=W`: 200 with jobs, 204 when none came
/// (with `Ironflow-Poll-Wait` when the request was held), 404 for an unknown worker.
pub async fn poll(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(worker): Path<String>,
    QueryParams(p): QueryParams<PollParams>,
) -> Result<Response, ApiError> {
    ctx.require(Permission::Write)?;
    let available = p.available.unwrap_or(1);
    let wait = Duration::from_secs(p.wait.unwrap_or(0));
    match state
        .engine
        .poll(&ctx.env, &worker, available, wait)
        .await?
    {
        PollOutcome::Jobs(jobs) => {
            let jobs: Vec<Value> = jobs.iter().map(job_assignment).collect();
            Ok(Json(json!({"jobs": jobs})).into_response())
        }
        PollOutcome::Empty { held } => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            if held {
                let secs = wait.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    response.headers_mut().insert("ironflow-poll-wait", v);
                }
            }
            Ok(response)
        }
        PollOutcome::UnknownWorker => Err(ApiError::not_found(format!(
            "worker '{worker}' is not registered; register again"
        ))),
    }
}

/// The job as the worker reads it. Optional keys are omitted, never null (the SDK rejects null).
fn job_assignment(job: &ClaimedJob) -> Value {
    let run = &job.run;
    let event = match &job.event {
        Some(e) => {
            let mut ev = json!({
                "id": e.id, "name": e.name, "data": e.data, "timestamp": e.received_at.to_rfc3339(),
                "version": e.version.max(1), "source": e.source, "metadata": e.metadata,
            });
            if let Some(key) = &e.idempotency_key {
                ev["idempotency_key"] = json!(key);
            }
            ev
        }
        None => json!({
            "id": run.id, "name": "ironflow/function.invoked", "data": run.input,
            "timestamp": run.created_at.to_rfc3339(), "version": 1, "source": "invoke",
        }),
    };
    let steps: Vec<Value> = job
        .completed_steps
        .iter()
        .map(|s| {
            let mut step = json!({"step_id": s.step_id, "name": s.name, "output": s.output, "status": s.status});
            if let Some(error) = &s.error {
                step["error"] = error.clone();
            }
            step
        })
        .collect();
    let on_exhausted = job
        .definition
        .as_ref()
        .and_then(|d| d.retry.as_ref())
        .map(|r| r.on_exhausted.clone())
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "fail".to_owned());
    let mut assignment = json!({
        "job_id": job.dispatch_id,
        "run_id": run.id,
        "function_id": run.function_id,
        "attempt": run.attempt.max(1),
        "max_attempts": run.max_attempts,
        "on_exhausted": on_exhausted,
        "event": event,
        "completed_steps": steps,
        "step_sequence_base": job.step_sequence_base,
        "execution_seq": job.execution_seq,
        "lease_token": job.lease_token,
        "lease_expires_at": job.lease_expires_at.to_rfc3339(),
    });
    if !job.secrets.is_empty() {
        assignment["context"] = json!({"secrets": job.secrets});
    }
    assignment
}

#[derive(Deserialize)]
pub struct FenceBody {
    execution_seq: i64,
    lease_token: String,
}

/// `PUT /api/v1/workers/{id}/jobs/{job}/ack`
pub async fn ack(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((_worker, job)): Path<(String, String)>,
    JsonBody(body): JsonBody<FenceBody>,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Write)?;
    let fence = Fence {
        execution_seq: body.execution_seq,
        lease_token: body.lease_token,
    };
    state.engine.ack_job(&job, &fence).await?;
    Ok(Json(json!({"status": "acked"})))
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
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

#[derive(Deserialize)]
pub struct EventFilterBody {
    event: String,
    #[serde(default, rename = "match")]
    match_path: Option<String>,
    #[serde(default)]
    match_value: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
pub struct ReportBody {
    status: String,
    execution_seq: i64,
    lease_token: String,
    #[serde(default)]
    steps: Vec<StepBody>,
    #[serde(default)]
    step_offset: i64,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default, rename = "yield")]
    yielded: Option<YieldBody>,
}

/// `PUT /api/v1/workers/{id}/jobs/{job}`: a checkpoint (`progress`) or the result.
pub async fn report(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path((_worker, job)): Path<(String, String)>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Value>, ApiError> {
    ctx.require(Permission::Write)?;
    let report = parse_report(job, body)?;
    state.engine.report_job(&report).await?;
    Ok(Json(json!({"status": "ok"})))
}

fn parse_time(field: &str, value: Option<String>) -> Result<Option<Ts>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| Ts(t.with_timezone(&chrono::Utc)))
                .map_err(|_| ApiError::invalid(format!("{field}: '{v}' is not an RFC 3339 time")))
        })
        .transpose()
}

fn parse_report(dispatch_id: String, body: ReportBody) -> Result<JobReport, ApiError> {
    let mut steps = Vec::with_capacity(body.steps.len());
    for s in body.steps {
        let completed = match s.status.as_str() {
            "completed" => true,
            "failed" => false,
            other => {
                return Err(ApiError::invalid(format!(
                    "steps[].status must be completed or failed, not '{other}'"
                )));
            }
        };
        steps.push(ReportedStep {
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
    let outcome = match body.status.as_str() {
        "progress" => ReportOutcome::Progress,
        "completed" => ReportOutcome::Completed {
            output: body.output.unwrap_or(Value::Null),
        },
        "failed" => {
            let e = body
                .error
                .ok_or_else(|| ApiError::invalid("a failed report needs an error"))?;
            ReportOutcome::Failed(JobFailure {
                message: e.message,
                code: if e.code.is_empty() {
                    "ERROR".into()
                } else {
                    e.code
                },
                retryable: e.retryable.unwrap_or(true),
                retry_after_ms: e.retry_after_ms,
            })
        }
        "yielded" => ReportOutcome::Yielded(parse_yield(
            body.yielded
                .ok_or_else(|| ApiError::invalid("a yielded report needs a yield"))?,
        )?),
        other => {
            return Err(ApiError::invalid(format!(
                "status must be progress, completed, failed or yielded, not '{other}'"
            )));
        }
    };
    Ok(JobReport {
        dispatch_id,
        fence: Fence {
            execution_seq: body.execution_seq,
            lease_token: body.lease_token,
        },
        steps,
        step_offset: body.step_offset,
        outcome,
    })
}

fn parse_yield(y: YieldBody) -> Result<YieldRequest, ApiError> {
    let need = |v: Option<String>, what: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("yield.{what} is required for {}", y.kind)))
    };
    Ok(match y.kind.as_str() {
        "sleep" => YieldRequest::Sleep {
            until: parse_time("yield.until", Some(need(y.until.clone(), "until")?))?
                .unwrap_or_else(Ts::now),
            step_id: y.step_id,
        },
        "wait_for_event" => {
            let f = y.event_filter.ok_or_else(|| {
                ApiError::invalid("yield.event_filter is required for wait_for_event")
            })?;
            let timeout = match f.timeout.as_deref() {
                Some(t) => parse_duration(t)
                    .map_err(|e| ApiError::invalid(format!("yield.event_filter.timeout: {e}")))?,
                None => Duration::from_secs(7 * 86_400),
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
            timeout: Duration::from_millis(y.invoke_timeout_ms.unwrap_or(30_000)),
            step_id: y.step_id,
        },
        "invoke_function_async" => YieldRequest::InvokeAsync {
            function_id: need(y.function_id.clone(), "function_id")?,
            input: y.input.unwrap_or(Value::Null),
            step_id: y.step_id,
        },
        other => return Err(ApiError::invalid(format!("unknown yield type '{other}'"))),
    })
}
