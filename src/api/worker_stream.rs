//! The gRPC worker stream (`ironflow.v1.WorkerService/Connect`, tonic, on the REST port): one
//! bidirectional stream per worker process carrying registration, credit-based job
//! assignment, heartbeats, step commits, results and cancellations. It drives the same engine
//! calls as the REST pull protocol (`register_worker`, `poll`, `heartbeat`, `report_job`), so
//! the fence, memoization and retries are the pull worker's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status, Streaming};

use crate::api::auth::Operation;
use crate::domain::authz::Permission;
use crate::domain::job::{Fence, JobFailure, JobReport, ReportOutcome, ReportedStep, YieldRequest};
use crate::domain::time::Ts;
use crate::engine::{Engine, EngineError, PollOutcome, WorkerHello};
use crate::ids::EnvId;
use crate::proto::v1 as pb;
use crate::proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use crate::store::execution::ClaimedJob;

use super::AppState;
use super::error::ApiError;

/// How long one claim waits for work before it looks again (it is woken by new work).
const POLL_WAIT: Duration = Duration::from_secs(25);
/// After the server starts stopping, how long a stream may go on to report held jobs.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Messages queued towards one worker.
const OUTBOUND_QUEUE: usize = 256;

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

/// The worker stream's gRPC route (`/ironflow.v1.WorkerService/*`), merged into the axum
/// router (which keeps its own fallback).
pub fn routes(state: AppState) -> axum::Router {
    use tonic::server::NamedService;
    use tower::ServiceExt;
    type Server = WorkerServiceServer<WorkerStream>;
    let service = Server::new(WorkerStream { state })
        .map_request(|req: axum::http::Request<axum::body::Body>| req.map(tonic::body::Body::new));
    axum::Router::new().route_service(&format!("/{}/{{*rest}}", Server::NAME), service)
}

struct WorkerStream {
    state: AppState,
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        use super::error::Code;
        let code = match e.code {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::Aborted => tonic::Code::Aborted,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::Unimplemented => tonic::Code::Unimplemented,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Internal => tonic::Code::Internal,
        };
        Status::new(code, e.message)
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerStream {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let headers = request.metadata().clone().into_headers();
        let operation = Operation {
            facts: crate::domain::policy::RequestFacts {
                method: "POST".into(),
                path: "/ironflow.v1.WorkerService/Connect".into(),
                rpc: "WorkerService/Connect".into(),
                ..Default::default()
            },
            permission: Some(Permission::WorkersRun),
        };
        let ctx = self
            .state
            .auth
            .authorize(&headers, None, None, operation)
            .await
            .map_err(Status::from)?;
        let mut inbound = request.into_inner();
        let engine = self.state.engine.clone();
        // The first message registers the worker; anything else is a protocol error.
        let hello = match inbound.message().await? {
            Some(pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Register(r)),
            }) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the worker stream must be `register`",
                ));
            }
        };
        let worker_id = hello.worker_id.clone();
        engine
            .register_worker(
                &ctx.env,
                WorkerHello {
                    id: hello.worker_id,
                    hostname: hello.hostname,
                    function_ids: hello.function_ids,
                    max_concurrent: hello.max_concurrent_jobs,
                    labels: serde_json::json!({"transport": "grpc"}),
                    version: serde_json::json!({"sdk": hello.sdk_version}),
                },
            )
            .await
            .map_err(|e| Status::from(ApiError::from(e)))?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let registered = pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Registered(pb::Registered {
                worker_id: worker_id.clone(),
                lease_ttl_ms: i64::try_from(engine.options().lease_ttl.as_millis())
                    .unwrap_or(i64::MAX),
            })),
        };
        // The channel is empty: this cannot fail.
        let _ = tx.try_send(Ok(registered));
        let session = Session {
            engine,
            env: ctx.env,
            worker_id,
            held: Arc::new(Mutex::new(HashMap::new())),
            credits: Arc::new(Semaphore::new(0)),
            tx,
        };
        tokio::spawn(session.run(inbound));
        let mut rx = rx;
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A job this stream's worker holds: its fence, and where its next reported step goes.
struct Held {
    fence: Fence,
    run_id: String,
    /// The position of the next step in the run's step order.
    next_step: i64,
}

type HeldJobs = Arc<Mutex<HashMap<String, Held>>>;

/// One connected worker (clones share its state: report tasks run beside the reader).
#[derive(Clone)]
struct Session {
    engine: Engine,
    env: EnvId,
    worker_id: String,
    held: HeldJobs,
    /// Jobs the worker can take; claims take permits, `Credit` adds them.
    credits: Arc<Semaphore>,
    tx: mpsc::Sender<Result<pb::ServerMessage, Status>>,
}

fn message(kind: pb::server_message::Kind) -> Result<pb::ServerMessage, Status> {
    Ok(pb::ServerMessage { kind: Some(kind) })
}

fn lock(held: &HeldJobs) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Session {
    async fn run(self, mut inbound: Streaming<pb::WorkerMessage>) {
        let claims = tokio::spawn(self.assign_jobs());
        let cancels = tokio::spawn(self.forward_cancellations());
        let shutdown = self.engine.shutdown_token().clone();
        // Reports of different jobs are applied concurrently, so one worker's many jobs share
        // group commits; a job's own reports come one at a time (the worker waits for each
        // `Committed`).
        let mut reports = tokio::task::JoinSet::new();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let draining = drain_deadline.is_some() || self.credits.is_closed();
            if draining && reports.is_empty() && lock(&self.held).is_empty() {
                break;
            }
            let grace = drain_deadline.unwrap_or_else(tokio::time::Instant::now);
            let next = tokio::select! {
                next = inbound.message() => next,
                Some(_) = reports.join_next(), if !reports.is_empty() => continue,
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    self.credits.close();
                    let _ = self.tx.send(message(pb::server_message::Kind::Draining(pb::ServerDraining {}))).await;
                    continue;
                }
                () = tokio::time::sleep_until(grace), if drain_deadline.is_some() => break,
            };
            let kind = match next {
                Ok(Some(pb::WorkerMessage { kind: Some(kind) })) => kind,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            };
            if is_report(&kind) {
                let session = self.clone();
                reports.spawn(async move {
                    if let Err(status) = session.handle(kind).await {
                        let _ = session.tx.send(Err(status)).await;
                    }
                });
            } else if let Err(status) = self.handle(kind).await {
                let _ = self.tx.send(Err(status)).await;
                break;
            }
        }
        claims.abort();
        cancels.abort();
        // Reports already read are applied before what is still held is given back.
        while reports.join_next().await.is_some() {}
        self.release_held().await;
    }

    /// A worker that went away gives its jobs back at once (no attempt used) instead of
    /// leaving them until their leases expire.
    async fn release_held(&self) {
        let held: Vec<(String, Fence)> = lock(&self.held)
            .drain()
            .map(|(job, h)| (job, h.fence))
            .collect();
        for (job, fence) in held {
            if let Err(e) = self.engine.release_job(&job, &fence).await {
                tracing::warn!(error = %e, job, "releasing a job of a disconnected worker failed; its lease will expire");
            }
        }
    }

    async fn handle(&self, kind: pb::worker_message::Kind) -> Result<(), Status> {
        use pb::worker_message::Kind;
        match kind {
            Kind::Register(_) => Err(Status::invalid_argument(
                "the worker is already registered on this stream",
            )),
            Kind::Credit(c) => {
                if c.jobs > 0 && !self.credits.is_closed() {
                    self.credits
                        .add_permits(usize::try_from(c.jobs).unwrap_or(0).min(10_000));
                }
                Ok(())
            }
            Kind::Heartbeat(h) => {
                let alive = self
                    .engine
                    .heartbeat(&self.env, &self.worker_id, &h.job_ids)
                    .await
                    .map_err(|e| Status::from(ApiError::from(e)))?;
                if alive {
                    let _ = self
                        .tx
                        .send(message(pb::server_message::Kind::Lease(
                            pb::LeaseExtended { job_ids: h.job_ids },
                        )))
                        .await;
                }
                Ok(())
            }
            Kind::Ack(a) => {
                let fence = required_fence(self, a.fence)?;
                // A stale ack is answered when the worker reports; nothing to do now.
                match self.engine.ack_job(&fence.0, &fence.1).await {
                    Ok(()) | Err(EngineError::StaleExecution | EngineError::PausedAtBoundary) => {
                        Ok(())
                    }
                    Err(e) => Err(Status::from(ApiError::from(e))),
                }
            }
            Kind::StepCompleted(s) => {
                let steps = s.step.into_iter().collect();
                self.report(s.request_id, s.fence, steps, ReportOutcome::Progress)
                    .await
            }
            Kind::JobYielded(y) => {
                let outcome = match y.r#yield.map(yield_request).transpose() {
                    Ok(Some(request)) => ReportOutcome::Yielded(request),
                    Ok(None) => return self.refuse(y.request_id, "job_yielded needs a yield"),
                    Err(e) => return self.refuse(y.request_id, &e),
                };
                self.report(y.request_id, y.fence, y.steps, outcome).await
            }
            Kind::JobCompleted(c) => {
                let output = match json_field("output_json", &c.output_json) {
                    Ok(v) => v,
                    Err(e) => return self.refuse(c.request_id, &e),
                };
                self.report(
                    c.request_id,
                    c.fence,
                    c.steps,
                    ReportOutcome::Completed { output },
                )
                .await
            }
            Kind::JobFailed(f) => {
                let failure = JobFailure {
                    message: f.message,
                    code: if f.code.is_empty() {
                        "FUNCTION_ERROR".into()
                    } else {
                        f.code
                    },
                    retryable: f.retryable,
                    retry_after_ms: (f.retry_after_ms > 0).then_some(f.retry_after_ms),
                };
                self.report(
                    f.request_id,
                    f.fence,
                    f.steps,
                    ReportOutcome::Failed(failure),
                )
                .await
            }
            Kind::Drain(_) => {
                self.credits.close();
                Ok(())
            }
        }
    }

    /// Answers a request the worker got wrong; the stream goes on.
    fn refuse(&self, request_id: u64, error: &str) -> Result<(), Status> {
        let _ = self
            .tx
            .try_send(message(pb::server_message::Kind::Committed(
                pb::Committed {
                    request_id,
                    ok: false,
                    stale: false,
                    error: error.to_owned(),
                },
            )));
        Ok(())
    }

    /// Commits steps and an outcome under the job's fence, then answers `Committed`.
    async fn report(
        &self,
        request_id: u64,
        fence: Option<pb::JobFence>,
        steps: Vec<pb::StepRecord>,
        outcome: ReportOutcome,
    ) -> Result<(), Status> {
        let (job, fence) = required_fence(self, fence)?;
        let steps = match steps.into_iter().map(reported_step).collect() {
            Ok(steps) => steps,
            Err(e) => return self.refuse(request_id, &e),
        };
        let final_report = !matches!(outcome, ReportOutcome::Progress);
        let step_offset = lock(&self.held)
            .get(&job)
            .filter(|h| h.fence == fence)
            .map(|h| h.next_step);
        let Some(step_offset) = step_offset else {
            // Not (or no longer) held here: re-dispatched elsewhere, cancelled, or finished.
            return self
                .answer(request_id, Err(EngineError::StaleExecution))
                .await;
        };
        let report = JobReport {
            dispatch_id: job.clone(),
            fence,
            steps,
            step_offset,
            outcome,
        };
        let result = self.engine.report_job(&report).await;
        {
            let mut held = lock(&self.held);
            match &result {
                Ok(()) if !final_report => {
                    if let Some(h) = held.get_mut(&job) {
                        h.next_step += report.steps.len() as i64;
                    }
                }
                Ok(()) | Err(EngineError::StaleExecution | EngineError::PausedAtBoundary) => {
                    held.remove(&job);
                }
                Err(_) => {}
            }
        }
        self.answer(request_id, result).await
    }

    async fn answer(&self, request_id: u64, result: Result<(), EngineError>) -> Result<(), Status> {
        let committed = match result {
            Ok(()) => pb::Committed {
                request_id,
                ok: true,
                ..Default::default()
            },
            Err(EngineError::StaleExecution | EngineError::PausedAtBoundary) => pb::Committed {
                request_id,
                stale: true,
                error: "STALE_EXECUTION".into(),
                ..Default::default()
            },
            Err(e) => pb::Committed {
                request_id,
                error: ApiError::from(e).message,
                ..Default::default()
            },
        };
        self.tx
            .send(message(pb::server_message::Kind::Committed(committed)))
            .await
            .map_err(|_| Status::cancelled("the worker went away"))
    }

    /// Claims jobs while the worker has credit and sends them as assignments.
    fn assign_jobs(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (engine, env, worker) = (
            self.engine.clone(),
            self.env.clone(),
            self.worker_id.clone(),
        );
        let (credits, held, tx) = (self.credits.clone(), self.held.clone(), self.tx.clone());
        async move {
            loop {
                let Ok(first) = credits.acquire().await else {
                    return; // draining
                };
                first.forget();
                let extra = credits.available_permits();
                if let Ok(p) = credits.try_acquire_many(u32::try_from(extra).unwrap_or(0)) {
                    p.forget();
                }
                let want = 1 + extra;
                let jobs = match engine.poll(&env, &worker, want as i64, POLL_WAIT).await {
                    Ok(PollOutcome::Jobs(jobs)) => jobs,
                    Ok(PollOutcome::Empty { .. }) => Vec::new(),
                    Ok(PollOutcome::UnknownWorker) => {
                        let _ = tx
                            .send(Err(Status::not_found(
                                "the worker's registration is gone; connect again",
                            )))
                            .await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming jobs for a stream worker failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Vec::new()
                    }
                };
                credits.add_permits(want - jobs.len());
                for job in jobs {
                    lock(&held).insert(
                        job.dispatch_id.clone(),
                        Held {
                            fence: Fence {
                                env_id: env.clone(),
                                worker_id: worker.clone(),
                                execution_seq: job.execution_seq,
                                lease_token: job.lease_token.clone(),
                            },
                            run_id: job.run.id.to_string(),
                            next_step: job.step_sequence_base,
                        },
                    );
                    let assignment = message(pb::server_message::Kind::Job(assignment(&job)));
                    if tx.send(assignment).await.is_err() {
                        return;
                    }
                }
                if engine.shutdown_token().is_cancelled() {
                    return;
                }
            }
        }
    }

    /// Tells the worker when a run it holds ends without it (cancelled, timed out).
    fn forward_cancellations(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut finished = self.engine.bus().subscribe_runs();
        let (held, tx) = (self.held.clone(), self.tx.clone());
        async move {
            loop {
                let run = match finished.recv().await {
                    Ok(run) => run,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let ended: Vec<(String, String)> = {
                    let mut held = lock(&held);
                    let jobs: Vec<String> = held
                        .iter()
                        .filter(|(_, h)| h.run_id == run.as_str())
                        .map(|(job, _)| job.clone())
                        .collect();
                    jobs.into_iter()
                        .filter_map(|job| held.remove(&job).map(|h| (job, h.run_id)))
                        .collect()
                };
                for (job_id, run_id) in ended {
                    let cancel = pb::CancelJob { job_id, run_id };
                    if tx
                        .send(message(pb::server_message::Kind::Cancel(cancel)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Messages that commit something (and wait for the database).
fn is_report(kind: &pb::worker_message::Kind) -> bool {
    use pb::worker_message::Kind;
    matches!(
        kind,
        Kind::StepCompleted(_) | Kind::JobYielded(_) | Kind::JobCompleted(_) | Kind::JobFailed(_)
    )
}

/// The job and fence a message names, held by this stream's environment and worker.
fn required_fence(
    session: &Session,
    fence: Option<pb::JobFence>,
) -> Result<(String, Fence), Status> {
    let f = fence.ok_or_else(|| Status::invalid_argument("fence is required"))?;
    Ok((
        f.job_id,
        Fence {
            env_id: session.env.clone(),
            worker_id: session.worker_id.clone(),
            execution_seq: f.execution_seq,
            lease_token: f.lease_token,
        },
    ))
}

/// Parses a `*_json` field; empty means null.
fn json_field(field: &str, text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| format!("{field} is not JSON: {e}"))
}

fn millis(ms: i64) -> Option<Ts> {
    (ms > 0)
        .then(|| chrono::DateTime::from_timestamp_millis(ms))
        .flatten()
        .map(Ts)
}

fn reported_step(s: pb::StepRecord) -> Result<ReportedStep, String> {
    if s.step_id.is_empty() {
        return Err("step.step_id is required".into());
    }
    let output = json_field("step.output_json", &s.output_json)?;
    let error = json_field("step.error_json", &s.error_json)?;
    Ok(ReportedStep {
        id: s.step_id,
        name: s.name,
        step_type: if s.r#type.is_empty() {
            "run".into()
        } else {
            s.r#type
        },
        completed: s.completed,
        output: (!s.output_json.is_empty()).then_some(output),
        error: (!s.error_json.is_empty()).then_some(error),
        started_at: millis(s.started_at_ms),
        ended_at: millis(s.ended_at_ms),
        compensation_for: Some(s.compensation_for).filter(|c| !c.is_empty()),
    })
}

fn duration_ms(field: &str, ms: i64, default: Duration) -> Result<Duration, String> {
    match ms {
        0 => Ok(default),
        ms if ms < 0 => Err(format!("{field} must not be negative")),
        ms => Ok(Duration::from_millis(ms.unsigned_abs())),
    }
}

fn yield_request(y: pb::Yield) -> Result<YieldRequest, String> {
    use pb::r#yield::Kind;
    if y.step_id.is_empty() {
        return Err("yield.step_id is required".into());
    }
    let step_id = y.step_id;
    Ok(match y.kind {
        Some(Kind::Sleep(s)) => YieldRequest::Sleep {
            step_id,
            until: millis(s.until_ms).unwrap_or_else(Ts::now),
        },
        Some(Kind::WaitForEvent(w)) => {
            if w.event.is_empty() {
                return Err("yield.wait_for_event.event is required".into());
            }
            YieldRequest::WaitForEvent {
                step_id,
                event: w.event,
                match_path: Some(w.match_path).filter(|m| !m.is_empty()),
                match_value: Some(w.match_value).filter(|m| !m.is_empty()),
                timeout: duration_ms(
                    "yield.wait_for_event.timeout_ms",
                    w.timeout_ms,
                    crate::domain::job::DEFAULT_WAIT_TIMEOUT,
                )?,
            }
        }
        Some(Kind::Invoke(i)) => YieldRequest::Invoke {
            step_id,
            function_id: required("yield.invoke.function_id", i.function_id)?,
            input: json_field("yield.invoke.input_json", &i.input_json)?,
            timeout: duration_ms(
                "yield.invoke.timeout_ms",
                i.timeout_ms,
                crate::domain::job::DEFAULT_INVOKE_TIMEOUT,
            )?,
        },
        Some(Kind::InvokeAsync(i)) => YieldRequest::InvokeAsync {
            step_id,
            function_id: required("yield.invoke_async.function_id", i.function_id)?,
            input: json_field("yield.invoke_async.input_json", &i.input_json)?,
        },
        None => {
            return Err("yield needs one of sleep, wait_for_event, invoke, invoke_async".into());
        }
    })
}

fn required(field: &str, value: String) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("{field} is required"))
    } else {
        Ok(value)
    }
}

fn assignment(job: &ClaimedJob) -> pb::JobAssignment {
    let run = &job.run;
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    pb::JobAssignment {
        fence: Some(pb::JobFence {
            job_id: job.dispatch_id.clone(),
            execution_seq: job.execution_seq,
            lease_token: job.lease_token.clone(),
        }),
        run_id: run.id.to_string(),
        function_id: run.function_id.to_string(),
        attempt: run.attempt.max(1),
        max_attempts: run.max_attempts,
        event_json: job.event_json().to_string(),
        steps: job
            .completed_steps
            .iter()
            .map(|s| pb::MemoStep {
                step_id: s.step_id.clone(),
                name: s.name.clone(),
                status: s.status.clone(),
                output_json: json(&s.output),
                error_json: json(&s.error),
            })
            .collect(),
        secrets: job.secrets.clone().into_iter().collect(),
        on_exhausted: job.on_exhausted(),
        lease_expires_at_ms: job.lease_expires_at.0.timestamp_millis(),
    }
}
