//! [`Worker`]: registers the functions, keeps one `WorkerService/Connect` stream open over
//! gRPC (reconnecting with backoff), runs each assigned job in its own task (at most
//! `concurrency` at once: the server assigns no more), renews leases, routes `step_ack`
//! answers, cancellations and stale leases, and drains on shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

use crate::client::{Client, ENVIRONMENT_HEADER};
use crate::ctx::{Ctx, Job};
use crate::error::{FnError, SdkError};
use crate::function::{Function, Handler};
use crate::invocation::{self, Ended, Ending};
use crate::link::Link;
use crate::proto::v1 as pb;
use crate::proto::v1::worker_service_client::WorkerServiceClient;
use pb::engine_message::Payload as EnginePayload;
use pb::worker_message::Payload;

/// Messages queued towards the server before senders wait.
const OUTBOUND_QUEUE: usize = 256;
/// How long the server may take to answer `register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat period when the server does not say one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
const SDK_VERSION: &str = concat!("ironflow-sdk-rust/", env!("CARGO_PKG_VERSION"));

/// Configures a [`Worker`].
#[derive(Debug)]
pub struct WorkerBuilder {
    server_url: String,
    api_key: String,
    environment: Option<String>,
    worker_id: Option<String>,
    concurrency: u32,
    drain_grace: Duration,
    functions: Vec<Function>,
}

impl WorkerBuilder {
    /// Serves the functions in this environment (by name) instead of the key's default.
    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// A stable worker id (default: a random UUID per `Worker`).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// How many jobs run at once (default 10).
    #[must_use]
    pub fn concurrency(mut self, jobs: u32) -> Self {
        self.concurrency = jobs;
        self
    }

    /// How long a shutdown waits for running jobs before it drops them (default 30 s).
    #[must_use]
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    #[must_use]
    pub fn function(mut self, function: Function) -> Self {
        self.functions.push(function);
        self
    }

    pub fn build(self) -> Result<Worker, SdkError> {
        if self.server_url.starts_with("https://") {
            // The stream's tonic channel is built without TLS support.
            return Err(SdkError::Config(
                "the worker stream speaks HTTP/2 without TLS (h2c): use an http:// URL".into(),
            ));
        }
        let mut client = Client::new(self.server_url, self.api_key.clone())?;
        if let Some(env) = &self.environment {
            client = client.environment(env.clone());
        }
        if self.functions.is_empty() {
            return Err(SdkError::Config(
                "a worker needs at least one function".into(),
            ));
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(SdkError::Config(format!(
                "concurrency must be between 1 and 10000, not {}",
                self.concurrency
            )));
        }
        let mut handlers = HashMap::new();
        for f in &self.functions {
            let handler = f
                .handler
                .clone()
                .ok_or_else(|| SdkError::Config(format!("function '{}' has no handler", f.id())))?;
            if handlers.insert(f.id().to_owned(), handler).is_some() {
                return Err(SdkError::Config(format!(
                    "function '{}' is defined twice",
                    f.id()
                )));
            }
        }
        Ok(Worker {
            client,
            api_key: self.api_key,
            environment: self.environment,
            worker_id: self
                .worker_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            concurrency: self.concurrency,
            drain_grace: self.drain_grace,
            functions: self.functions,
            handlers,
        })
    }
}

/// Runs functions for the server: see [`Worker::run`].
pub struct Worker {
    client: Client,
    api_key: String,
    environment: Option<String>,
    worker_id: String,
    concurrency: u32,
    drain_grace: Duration,
    functions: Vec<Function>,
    handlers: HashMap<String, Handler>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("server_url", &self.client.server_url())
            .field("environment", &self.environment)
            .field("worker_id", &self.worker_id)
            .field("concurrency", &self.concurrency)
            .field("functions", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How one connection ended.
enum SessionEnd {
    /// The shutdown token fired and the drain is over.
    Shutdown,
    /// The stream broke or the server ended it; `registered` says whether it got that far
    /// (a connection that worked resets the backoff).
    Disconnected { registered: bool },
}

/// Exponential backoff with jitter between reconnects.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: FIRST_RECONNECT_DELAY,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_RECONNECT_DELAY;
    }

    /// Half the nominal delay plus a random part of the other half, so that workers that lost
    /// the same server do not all come back at the same instant.
    fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (nominal * 2).min(MAX_RECONNECT_DELAY);
        let half = nominal / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A gRPC status the server will answer again on the next try.
fn status_error(status: &tonic::Status) -> SdkError {
    use tonic::Code;
    let text = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::Unimplemented => SdkError::Refused(text),
        _ => SdkError::Stream(text),
    }
}

impl Worker {
    pub fn builder(server_url: impl Into<String>, api_key: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            server_url: server_url.into(),
            api_key: api_key.into(),
            environment: None,
            worker_id: None,
            concurrency: 10,
            drain_grace: Duration::from_secs(30),
            functions: Vec::new(),
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Registers the functions, then serves jobs until `shutdown` is cancelled: it then
    /// stops taking jobs (nacking new assignments `DRAINING`), lets running jobs finish (at most
    /// the drain grace) and returns `Ok(())`.
    ///
    /// A broken stream is reopened with exponential backoff (100 ms doubling to 5 s, with
    /// jitter); jobs running on it are dropped (the server gives them back). Returns `Err` only
    /// for what retrying cannot fix: a refused key, an invalid function definition.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), SdkError> {
        let mut backoff = Backoff::new();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match self.session(&shutdown).await {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Disconnected { registered }) => {
                    if registered {
                        backoff.reset();
                    }
                    tracing::info!(worker_id = %self.worker_id, "worker stream ended; reconnecting");
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(worker_id = %self.worker_id, error = %e, "worker stream failed; reconnecting");
                }
                Err(e) => return Err(e),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn register_functions(&self) -> Result<(), SdkError> {
        for f in &self.functions {
            let created = self.client.register(f).await?;
            tracing::debug!(function_id = f.id(), created, "function registered");
        }
        Ok(())
    }

    /// One connection: register, open the stream, serve until it ends or the drain is over.
    async fn session(&self, shutdown: &CancellationToken) -> Result<SessionEnd, SdkError> {
        // Registered again on every connection: cheap (an unchanged definition stores
        // nothing) and it repairs a server that lost them.
        tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            registered = self.register_functions() => registered?,
        }
        let endpoint = tonic::transport::Endpoint::from_shared(self.client.server_url().to_owned())
            .map_err(|e| SdkError::Config(format!("server URL: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            // A peer that vanished (no FIN) is noticed without waiting for the lease.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            channel = endpoint.connect() => channel.map_err(|e| SdkError::Stream(format!("connecting: {e}")))?,
        };
        let (tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let link = Arc::new(Link::new(tx));
        let hello = Payload::Register(pb::WorkerRegister {
            worker_id: self.worker_id.clone(),
            hostname: hostname(),
            function_ids: self.functions.iter().map(|f| f.id().to_owned()).collect(),
            max_concurrent_jobs: i32::try_from(self.concurrency).unwrap_or(i32::MAX),
            labels: HashMap::new(),
            version: Some(pb::WorkerVersion {
                sdk: SDK_VERSION.into(),
                runtime: "rust".into(),
            }),
        });
        // The channel is empty: the first message is queued before the call starts.
        link.send(hello)
            .await
            .map_err(|_| SdkError::Stream("the outbound queue closed".into()))?;
        let outbound = futures::stream::unfold(outbound, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let mut request = tonic::Request::new(outbound);
        let auth = MetadataValue::try_from(format!("Bearer {}", self.api_key))
            .map_err(|_| SdkError::Config("the API key is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", auth);
        if let Some(env) = &self.environment {
            let env = MetadataValue::try_from(env.as_str()).map_err(|_| {
                SdkError::Config("the environment is not a valid header value".into())
            })?;
            request.metadata_mut().insert(ENVIRONMENT_HEADER, env);
        }
        let mut grpc = WorkerServiceClient::new(channel);
        let opened = tokio::select! {
            () = shutdown.cancelled() => {
                link.close();
                return Ok(SessionEnd::Shutdown);
            }
            opened = grpc.connect(request) => opened,
        };
        let mut inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                link.close();
                return Err(status_error(&status));
            }
        };
        let heartbeat_ms = match tokio::time::timeout(REGISTER_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::EngineMessage {
                payload: Some(EnginePayload::Registered(r)),
            }))) => r.heartbeat_interval_ms,
            Ok(Ok(other)) => {
                link.close();
                return Err(SdkError::Stream(format!(
                    "expected `registered` first, got {other:?}"
                )));
            }
            Ok(Err(status)) => {
                link.close();
                return Err(status_error(&status));
            }
            Err(_) => {
                link.close();
                return Err(SdkError::Stream("no `registered` answer in time".into()));
            }
        };
        tracing::info!(worker_id = %self.worker_id, heartbeat_ms, "worker connected");
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut session = Session {
            worker: self,
            link,
            running: HashMap::new(),
            done_tx,
            draining: false,
            server_draining: false,
        };
        session
            .serve(inbound, done_rx, heartbeat_ms, shutdown)
            .await
    }
}

/// An invocation in progress.
struct Running {
    ending: Arc<Ending>,
    task: JoinHandle<()>,
    /// What a heartbeat says of it.
    active: pb::ActiveJob,
}

/// The state of one open stream.
struct Session<'w> {
    worker: &'w Worker,
    link: Arc<Link>,
    running: HashMap<String, Running>,
    done_tx: mpsc::UnboundedSender<(String, Ended)>,
    /// The worker is stopping: new assignments are nacked, running jobs finish.
    draining: bool,
    /// The server is stopping (`shutdown`): new assignments are nacked (it ends the stream
    /// soon).
    server_draining: bool,
}

impl Session<'_> {
    async fn serve(
        &mut self,
        mut inbound: tonic::Streaming<pb::EngineMessage>,
        mut done_rx: mpsc::UnboundedReceiver<(String, Ended)>,
        heartbeat_ms: i32,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, SdkError> {
        let period = u64::try_from(heartbeat_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_HEARTBEAT, Duration::from_millis)
            .max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut drain_deadline: Option<Instant> = None;
        let outcome = loop {
            // Only read when a drain started (the branch is disabled otherwise).
            let deadline = drain_deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        if let Some(payload) = m.payload {
                            self.on_message(payload).await;
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(status_error(&status)),
                },
                Some((job_id, ended)) = done_rx.recv() => self.finished(job_id, ended).await,
                _ = heartbeat.tick() => self.heartbeat().await,
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(worker_id = %self.worker.worker_id, running = self.running.len(), "draining");
                    self.draining = true;
                    drain_deadline = Some(Instant::now() + self.worker.drain_grace);
                }
                () = tokio::time::sleep_until(deadline), if drain_deadline.is_some() => {
                    tracing::warn!(
                        worker_id = %self.worker.worker_id,
                        running = self.running.len(),
                        "drain grace passed; dropping the jobs still running",
                    );
                    break Ok(());
                }
            }
            if self.draining && self.running.is_empty() {
                break Ok(());
            }
        };
        self.close();
        match outcome {
            _ if shutdown.is_cancelled() => Ok(SessionEnd::Shutdown),
            Ok(()) => Ok(SessionEnd::Disconnected { registered: true }),
            Err(e @ SdkError::Refused(_)) => Err(e),
            Err(e) => {
                tracing::warn!(worker_id = %self.worker.worker_id, error = %e, "worker stream broke");
                Ok(SessionEnd::Disconnected { registered: true })
            }
        }
    }

    /// Ends the stream and every invocation still on it.
    fn close(&mut self) {
        self.link.close();
        for (job_id, running) in self.running.drain() {
            tracing::debug!(job_id, "abandoning a running job");
            running.ending.end(Ended::Abandoned);
            running.task.abort();
        }
    }

    /// Sends a message without an answer. A closed link means the stream is gone, which the
    /// read side notices and handles.
    async fn send(&self, payload: Payload) {
        if self.link.send(payload).await.is_err() {
            tracing::debug!("worker stream closed; message not sent");
        }
    }

    async fn on_message(&mut self, payload: EnginePayload) {
        match payload {
            EnginePayload::Job(assignment) => self.start(assignment).await,
            EnginePayload::StepAck(ack) => self.link.resolve(ack),
            EnginePayload::Cancel(cancel) => {
                if let Some(running) = self.running.get(&cancel.job_id) {
                    tracing::info!(
                        job_id = cancel.job_id,
                        reason = cancel.reason,
                        "job cancelled by the server"
                    );
                    running.ending.end(Ended::Cancelled);
                }
            }
            EnginePayload::Shutdown(_) => {
                tracing::info!(worker_id = %self.worker.worker_id, "the server is stopping");
                self.server_draining = true;
            }
            EnginePayload::LeaseRefresh(refresh) => {
                for segment in refresh.segments {
                    if segment.state == pb::LeaseState::Refreshed as i32 {
                        continue;
                    }
                    for running in self.running.values().filter(|r| {
                        r.active.run_id == segment.run_id
                            && r.active.execution_seq == segment.execution_seq
                    }) {
                        running.ending.end(Ended::Stale);
                    }
                }
            }
            // `resume` is for workers that keep a suspended job in memory; this one hands
            // the job back and gets a new assignment.
            EnginePayload::Registered(_) | EnginePayload::Resume(_) => {}
        }
    }

    /// Gives an assignment back at once (no attempt used).
    async fn nack(&self, a: &pb::JobAssignment, reason: pb::JobNackReason) {
        self.send(Payload::JobNack(pb::JobNack {
            job_id: a.job_id.clone(),
            run_id: a.run_id.clone(),
            execution_seq: a.execution_seq,
            lease_token: a.lease_token.clone(),
            reason: reason as i32,
        }))
        .await;
    }

    async fn start(&mut self, assignment: pb::JobAssignment) {
        if self.running.contains_key(&assignment.job_id) {
            // A re-delivered job that runs here already: dropped, never nacked (a nack would
            // queue a job that is still running).
            tracing::warn!(
                job_id = assignment.job_id,
                "assignment for a job already running; ignored"
            );
            return;
        }
        if self.draining || self.server_draining {
            self.nack(&assignment, pb::JobNackReason::Draining).await;
            return;
        }
        if self.running.len() >= self.worker.concurrency as usize {
            tracing::warn!(job_id = assignment.job_id, "at capacity; job given back");
            self.nack(&assignment, pb::JobNackReason::AtCapacity).await;
            return;
        }
        let active = pb::ActiveJob {
            job_id: assignment.job_id.clone(),
            started_at: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp(),
                nanos: 0,
            }),
            run_id: assignment.run_id.clone(),
            execution_seq: assignment.execution_seq,
            lease_token: assignment.lease_token.clone(),
        };
        self.send(Payload::JobAck(pb::JobAck {
            job_id: active.job_id.clone(),
            run_id: active.run_id.clone(),
            execution_seq: active.execution_seq,
            lease_token: active.lease_token.clone(),
        }))
        .await;
        let job = Job::from_assignment(assignment);
        let job_id = job.job_id().to_owned();
        let handler = self
            .worker
            .handlers
            .get(&job.function_id)
            .cloned()
            .unwrap_or_else(|| unknown_function(&job.function_id));
        tracing::debug!(
            job_id,
            run_id = job.run_id,
            function_id = job.function_id,
            attempt = job.attempt,
            "job assigned"
        );
        let ending = Arc::new(Ending::default());
        let ctx = Ctx::new(
            job,
            self.link.clone(),
            ending.clone(),
            self.worker.client.clone(),
        );
        let done = self.done_tx.clone();
        let id = job_id.clone();
        let task = tokio::spawn(async move {
            let ended = invocation::invoke(ctx, handler).await;
            let _ = done.send((id, ended));
        });
        self.running.insert(
            job_id,
            Running {
                ending,
                task,
                active,
            },
        );
    }

    async fn finished(&mut self, job_id: String, ended: Ended) {
        if self.running.remove(&job_id).is_none() {
            return;
        }
        match &ended {
            Ended::Refused(message) => {
                tracing::warn!(job_id, message, "the server refused the job's result");
            }
            Ended::Stale => tracing::info!(job_id, "the job was taken away (stale fence)"),
            other => tracing::debug!(job_id, ended = ?other, "job ended"),
        }
    }

    /// Renews the running jobs' leases; sent when idle too, so the server sees the worker as
    /// alive (`last_seen`).
    async fn heartbeat(&self) {
        let jobs: Vec<pb::ActiveJob> = self.running.values().map(|r| r.active.clone()).collect();
        self.send(Payload::Heartbeat(pb::WorkerHeartbeat {
            worker_id: self.worker.worker_id.clone(),
            active_jobs: i32::try_from(jobs.len()).unwrap_or(i32::MAX),
            jobs,
            metrics: None,
        }))
        .await;
    }
}

/// The handler for a job of a function this worker does not have (only a server that ignores
/// `register.function_ids` sends one): a retryable failure, so a worker that has the
/// function can take the next attempt.
fn unknown_function(function_id: &str) -> Handler {
    let message = format!("this worker has no function '{function_id}'");
    Arc::new(move |_: Ctx, _| {
        let message = message.clone();
        async move { Err(FnError::retryable(message).code("FUNCTION_NOT_FOUND")) }.boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_millis(2_500) && late <= MAX_RECONNECT_DELAY,
            "{late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn build_checks_the_configuration() {
        let f = || {
            Function::new("f")
                .handler(|_: Ctx, v: serde_json::Value| async move { Ok::<_, FnError>(v) })
        };
        assert!(matches!(
            Worker::builder("http://x", "k").build(),
            Err(SdkError::Config(_))
        ));
        assert!(matches!(
            Worker::builder("http://x", "k").function(Function::new("g")).build(),
            Err(SdkError::Config(m)) if m.contains("no handler")
        ));
        assert!(matches!(
            Worker::builder("http://x", "k").function(f()).function(f()).build(),
            Err(SdkError::Config(m)) if m.contains("twice")
        ));
        assert!(matches!(
            Worker::builder("https://x", "k").function(f()).build(),
            Err(SdkError::Config(_))
        ));
        let w = Worker::builder("http://x/", "k")
            .worker_id("w-1")
            .concurrency(2)
            .function(f())
            .build()
            .expect("valid");
        assert_eq!(w.worker_id(), "w-1");
        assert_eq!(w.client.server_url(), "http://x");
    }
}
