//! The REST pull-worker protocol (`/api/v1/workers/{id}/…`) as ironflow-py's `Worker` speaks it:
//! register, heartbeat, long-poll for jobs, ack and report under a fence.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::job::{Fence, JobReport, ReportOutcome};
use crate::domain::job_wire::{
    ErrorBody, StepBody, WireError, YieldBody, parse_failure, parse_steps, parse_yield,
};
use crate::engine::{PollOutcome, WorkerHello};
use crate::store::execution::ClaimedJob;

use super::AppState;
use super::auth::RequestContext;
use super::error::ApiError;
use super::extract::PathParams;
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
    PathParams(worker): PathParams<String>,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Json<Value>, ApiError> {
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
    PathParams(worker): PathParams<String>,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    let jobs: Vec<String> = body.jobs.into_iter().map(|j| j.job_id).collect();
    if state
        .engine
        .heartbeat(&ctx.env, &worker, &jobs)
        .await?
        .is_some()
    {
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
    let workers = state.engine.list_workers(&ctx.env).await?;
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id, "hostname": w.hostname, "function_ids": w.function_ids,
                "max_concurrent": w.max_concurrent, "labels": w.labels, "version": w.version,
                "registered_at": w.registered_at.to_rfc3339(), "last_heartbeat": w.last_heartbeat_at.to_rfc3339(),
                // Stream workers say so in their labels; REST workers have none.
                "transport": w.labels.get("transport").and_then(Value::as_str).unwrap_or("rest"),
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
    PathParams(worker): PathParams<String>,
    QueryParams(p): QueryParams<PollParams>,
) -> Result<Response, ApiError> {
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
    let event = job.event_json();
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
    let on_exhausted = job.on_exhausted();
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
    let mut context = job.trace_json();
    if !job.secrets.is_empty() {
        context["secrets"] = json!(job.secrets);
    }
    if context.as_object().is_some_and(|c| !c.is_empty()) {
        assignment["context"] = context;
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
    PathParams((worker, job)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<FenceBody>,
) -> Result<Json<Value>, ApiError> {
    let fence = Fence {
        env_id: ctx.env.clone(),
        worker_id: worker,
        execution_seq: body.execution_seq,
        lease_token: body.lease_token,
    };
    state.engine.ack_job(&job, &fence).await?;
    Ok(Json(json!({"status": "acked"})))
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
    PathParams((worker, job)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<Json<Value>, ApiError> {
    // Only the environment and the worker the job was leased to may report on it.
    let holder = Fence {
        env_id: ctx.env.clone(),
        worker_id: worker,
        execution_seq: body.execution_seq,
        lease_token: body.lease_token.clone(),
    };
    let report = parse_report(job, holder, body)?;
    state.engine.report_job(&report).await?;
    Ok(Json(json!({"status": "ok"})))
}

fn parse_report(
    dispatch_id: String,
    fence: Fence,
    body: ReportBody,
) -> Result<JobReport, ApiError> {
    let invalid = |e: WireError| ApiError::invalid(e.to_string());
    let steps = parse_steps(body.steps).map_err(invalid)?;
    let outcome = match body.status.as_str() {
        "progress" => ReportOutcome::Progress,
        "completed" => ReportOutcome::Completed {
            output: body.output.unwrap_or(Value::Null),
        },
        "failed" => ReportOutcome::Failed(parse_failure(
            body.error
                .ok_or_else(|| ApiError::invalid("a failed report needs an error"))?,
        )),
        "yielded" => ReportOutcome::Yielded(
            parse_yield(
                body.yielded
                    .ok_or_else(|| ApiError::invalid("a yielded report needs a yield"))?,
            )
            .map_err(invalid)?,
        ),
        other => {
            return Err(ApiError::invalid(format!(
                "status must be progress, completed, failed or yielded, not '{other}'"
            )));
        }
    };
    Ok(JobReport {
        dispatch_id,
        fence,
        steps,
        step_offset: body.step_offset,
        outcome,
    })
}
