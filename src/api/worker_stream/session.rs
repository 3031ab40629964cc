//! One worker's stream conversation, whatever carries it (gRPC or Connect): registration, job
//! assignments up to the worker's `max_concurrent_jobs`, each held job's reports committed in
//! the order sent, heartbeats, cancellations, the server's drain, and the jobs of a worker
//! that went away given back at once.
//!
//! It drives the engine calls the REST pull protocol drives (`register_worker`, `poll`,
//! `heartbeat`, `report_job`, `release_job`), so fences, memoization and retries are the
//! pull worker's.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::domain::job::{Fence, JobReport, ReportOutcome, ReportedStep};
use crate::domain::time::Ts;
use crate::engine::{Engine, EngineError, PollOutcome, WorkerHello};
use crate::ids::EnvId;
use crate::proto::v1 as pb;

use super::wire::{self, StepLabel};
use crate::api::error::ApiError;

/// How long one claim waits for work before it looks again (it is woken by new work).
const POLL_WAIT: Duration = Duration::from_secs(25);
/// After the server starts stopping, how long a stream may go on to report held jobs.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Messages queued towards one worker.
const OUTBOUND_QUEUE: usize = 256;
/// How long a new stream may take to send `register`.
const REGISTER_WAIT: Duration = Duration::from_secs(30);
/// The most jobs one stream may hold, whatever the worker asks for.
const MAX_HELD: usize = 10_000;
/// Reports one job may have waiting to be applied; a worker that sends more ends its stream
/// (ironflow-py queues at most 256 messages of all its jobs).
const REPORT_QUEUE: usize = 1024;
/// The error text of a report whose fence no longer holds.
pub const STALE: &str = "STALE_EXECUTION";

/// The worker's messages as a transport decoded them; an `Err` ends the stream.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<pb::WorkerMessage, ApiError>> + Send>>;
/// What the server sends; an `Err` ends the stream with that error.
pub type Outbound = mpsc::Receiver<Result<pb::EngineMessage, ApiError>>;

/// Reads `register`, registers the worker and starts its session; returns the server's half
/// of the stream, `registered` first.
pub async fn open(engine: Engine, env: EnvId, mut inbound: Inbound) -> Result<Outbound, ApiError> {
    let first = tokio::time::timeout(REGISTER_WAIT, inbound.next())
        .await
        .map_err(|_| {
            ApiError::invalid("no `register` message within 30 s of opening the stream")
        })?;
    let hello = match first {
        Some(Ok(pb::WorkerMessage {
            payload: Some(pb::worker_message::Payload::Register(r)),
        })) => r,
        Some(Err(e)) => return Err(e),
        _ => {
            return Err(ApiError::invalid(
                "the first message on the worker stream must be `register`",
            ));
        }
    };
    let worker_id = hello.worker_id.clone();
    let capacity = usize::try_from(hello.max_concurrent_jobs)
        .unwrap_or(0)
        .clamp(1, MAX_HELD);
    let version = hello.version.clone().unwrap_or_default();
    let mut labels: serde_json::Map<String, Value> = hello
        .labels
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    labels.insert("transport".into(), Value::String("stream".into()));
    engine
        .register_worker(
            &env,
            WorkerHello {
                id: hello.worker_id,
                hostname: hello.hostname,
                function_ids: hello.function_ids,
                max_concurrent: i32::try_from(capacity).unwrap_or(i32::MAX),
                labels: Value::Object(labels),
                version: serde_json::json!({"sdk": version.sdk, "runtime": version.runtime}),
            },
        )
        .await?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let lease_ttl = engine.options().lease_ttl;
    let registered = pb::WorkerRegistered {
        worker_id: worker_id.clone(),
        // A third of the lease: two heartbeats may be lost before a lease runs out.
        heartbeat_interval_ms: i32::try_from(lease_ttl.as_millis() / 3)
            .unwrap_or(i32::MAX)
            .max(100),
    };
    // The channel is empty: this cannot fail.
    let _ = tx.try_send(message(pb::engine_message::Payload::Registered(registered)));
    let session = Session {
        shared: Arc::new(Shared {
            engine,
            env,
            worker_id,
            held: Mutex::new(HashMap::new()),
            slots: Semaphore::new(capacity),
            owed_slots: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
            tx,
        }),
    };
    tokio::spawn(session.run(inbound));
    Ok(rx)
}

fn too_many_reports() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        crate::api::error::Code::ResourceExhausted,
        format!("more than {REPORT_QUEUE} reports of one job are waiting to be applied"),
    )
}

fn message(payload: pb::engine_message::Payload) -> Result<pb::EngineMessage, ApiError> {
    Ok(pb::EngineMessage {
        payload: Some(payload),
    })
}

/// A report waiting in its job's queue.
enum Report {
    Started {
        step_id: String,
        label: StepLabel,
    },
    /// One finished step (`step_completed`, `step_failed`); acked under `ack`.
    Step {
        ack: String,
        step: Result<ReportedStep, String>,
    },
    /// The end of the dispatch (`step_yielded`, `job_completed`, `job_failed`).
    End {
        ack: String,
        steps: Result<Vec<ReportedStep>, String>,
        outcome: Result<ReportOutcome, String>,
    },
}

/// A job this stream's worker holds.
struct Held {
    fence: Fence,
    run_id: String,
    /// Its report queue (one task applies it in order).
    reports: mpsc::Sender<Report>,
    /// The task applying that queue.
    applier: tokio::task::JoinHandle<()>,
    /// Its final report is being committed: the run's end is this worker's doing, not a
    /// cancellation to forward.
    finishing: bool,
}

struct Shared {
    engine: Engine,
    env: EnvId,
    worker_id: String,
    held: Mutex<HashMap<String, Held>>,
    /// Free capacity: a claim takes permits, a job that stops being held gives one back.
    /// Closed when the worker or the server drains.
    slots: Semaphore,
    /// Jobs the worker nacked as at capacity: their slots come back at its next heartbeat
    /// (not at once, or the same job would bounce between the queue and a full worker).
    owed_slots: AtomicUsize,
    /// Signalled when the last held job stops being held (a drain can end then).
    emptied: tokio::sync::Notify,
    tx: mpsc::Sender<Result<pb::EngineMessage, ApiError>>,
}

/// One connected worker (clones share its state).
#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
}

/// Why a job stopped being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Its final report committed, or it was nacked at capacity (slot owed).
    Done,
    NackedAtCapacity,
}

impl Session {
    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn send(&self, payload: pb::engine_message::Payload) -> bool {
        self.shared.tx.send(message(payload)).await.is_ok()
    }

    async fn run(self, mut inbound: Inbound) {
        let claims = tokio::spawn(self.clone().assign_jobs());
        let cancels = tokio::spawn(self.clone().forward_cancellations());
        let shutdown = self.shared.engine.shutdown_token().clone();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if drain_deadline.is_some() && self.held().is_empty() {
                break;
            }
            let grace = drain_deadline.unwrap_or_else(tokio::time::Instant::now);
            let next = tokio::select! {
                next = inbound.next() => next,
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    self.shared.slots.close();
                    self.send(pb::engine_message::Payload::Shutdown(pb::Shutdown {
                        reason: "the server is stopping".into(),
                        drain_timeout_ms: i32::try_from(DRAIN_GRACE.as_millis()).unwrap_or(i32::MAX),
                    })).await;
                    continue;
                }
                () = tokio::time::sleep_until(grace), if drain_deadline.is_some() => break,
                () = self.shared.emptied.notified(), if drain_deadline.is_some() => continue,
            };
            let payload = match next {
                Some(Ok(pb::WorkerMessage { payload: Some(p) })) => p,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    // A frame we cannot read ends the stream with the reason.
                    tracing::debug!(worker = %self.shared.worker_id, error = %e.message, "worker stream read failed");
                    let _ = self.shared.tx.send(Err(e)).await;
                    break;
                }
                None => break,
            };
            if let Err(e) = self.handle(payload).await {
                let _ = self.shared.tx.send(Err(e)).await;
                break;
            }
        }
        // Both finished before the release, so neither can hold a job after it.
        claims.abort();
        cancels.abort();
        let _ = claims.await;
        let _ = cancels.await;
        self.release_held().await;
    }

    /// A worker that went away gives its jobs back at once (no attempt used) instead of
    /// leaving them until their leases expire. Reports already queued are applied first
    /// (a job's queue task ends once its sender is gone).
    async fn release_held(&self) {
        let held: Vec<(String, Fence, tokio::task::JoinHandle<()>)> = self
            .held()
            .drain()
            .map(|(job, h)| (job, h.fence, h.applier))
            .collect();
        for (job, fence, applier) in held {
            // The queue's sender is gone with the entry: the applier ends once it is empty.
            // Bounded: an applier blocked on a peer that stopped reading must not keep the
            // job from going back.
            let _ = tokio::time::timeout(DRAIN_GRACE, applier).await;
            if let Err(e) = self.shared.engine.release_job(&job, &fence).await {
                tracing::warn!(error = %e, job, "releasing a job of a disconnected worker failed; its lease will expire");
            }
        }
    }

    /// Stops holding `job` (if it still is) and frees its slot unless it is owed.
    fn unhold(&self, job: &str, why: Release) -> Option<Held> {
        let held = {
            let mut all = self.held();
            let held = all.remove(job)?;
            if all.is_empty() {
                self.shared.emptied.notify_one();
            }
            held
        };
        match why {
            Release::Done => self.shared.slots.add_permits(1),
            Release::NackedAtCapacity => {
                self.shared.owed_slots.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(held)
    }

    /// Queues a report behind the job's earlier ones; a job not held is answered stale.
    async fn enqueue(&self, job: &str, report: Report) -> Result<(), ApiError> {
        use mpsc::error::TrySendError;
        let refused = {
            let held = self.held();
            match held.get(job) {
                Some(h) => match h.reports.try_send(report) {
                    Ok(()) => None,
                    Err(TrySendError::Full(_)) => return Err(too_many_reports()),
                    Err(TrySendError::Closed(report)) => Some(report),
                },
                None => Some(report),
            }
        };
        if let Some(Report::Step { ack, .. } | Report::End { ack, .. }) = refused {
            self.ack(ack, Err(STALE.into())).await;
        }
        Ok(())
    }

    async fn ack(&self, step_id: String, result: Result<(), String>) {
        let (accepted, error) = match result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e),
        };
        self.send(pb::engine_message::Payload::StepAck(pb::StepAck {
            step_id,
            accepted,
            error,
        }))
        .await;
    }

    async fn handle(&self, payload: pb::worker_message::Payload) -> Result<(), ApiError> {
        use pb::worker_message::Payload;
        let now = Ts::now();
        match payload {
            Payload::Register(_) => {
                return Err(ApiError::invalid(
                    "the worker is already registered on this stream",
                ));
            }
            Payload::Heartbeat(h) => self.heartbeat(h).await?,
            Payload::StepStarted(s) => {
                let label = StepLabel {
                    name: if s.name.is_empty() {
                        s.step_id.clone()
                    } else {
                        s.name
                    },
                    step_type: wire::step_type_name(s.step_type).to_owned(),
                };
                let report = Report::Started {
                    step_id: s.step_id,
                    label,
                };
                // A start of a job no longer held needs no answer.
                if let Some(h) = self.held().get(&s.job_id)
                    && let Err(mpsc::error::TrySendError::Full(_)) = h.reports.try_send(report)
                {
                    return Err(too_many_reports());
                }
            }
            Payload::StepCompleted(s) => {
                // The label is applied in the job's queue (it knows the `step_started`s).
                let report = Report::Step {
                    ack: s.step_id.clone(),
                    step: wire::completed_step(&s, None, now).map_err(|e| e.0),
                };
                self.enqueue(&s.job_id, report).await?;
            }
            Payload::StepFailed(s) => {
                let report = Report::Step {
                    ack: s.step_id.clone(),
                    step: wire::failed_step(&s, None, now).map_err(|e| e.0),
                };
                self.enqueue(&s.job_id, report).await?;
            }
            Payload::StepYielded(y) => {
                let report = Report::End {
                    ack: y.step_id.clone(),
                    steps: Ok(Vec::new()),
                    outcome: wire::yield_request(&y, now)
                        .map(ReportOutcome::Yielded)
                        .map_err(|e| e.0),
                };
                self.enqueue(&y.job_id, report).await?;
            }
            Payload::JobCompleted(c) => {
                let output = wire::payload(c.output.as_ref(), c.output_value.as_ref());
                let report = Report::End {
                    ack: c.job_id.clone(),
                    steps: Ok(Vec::new()),
                    outcome: Ok(ReportOutcome::Completed { output }),
                };
                self.enqueue(&c.job_id, report).await?;
            }
            Payload::JobFailed(f) => {
                let steps = f
                    .steps
                    .iter()
                    .map(|s| wire::executed_step(s, now))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.0);
                let report = Report::End {
                    ack: f.job_id.clone(),
                    steps,
                    outcome: Ok(ReportOutcome::Failed(wire::failure(f.error.as_ref()))),
                };
                self.enqueue(&f.job_id, report).await?;
            }
            // The claim set the lease just now: an ack needs no write.
            Payload::JobAck(_) => {}
            Payload::JobNack(n) => {
                let draining = n.reason == pb::JobNackReason::Draining as i32;
                if draining {
                    self.shared.slots.close();
                }
                let why = if draining {
                    Release::Done
                } else {
                    Release::NackedAtCapacity
                };
                let fence = self
                    .held()
                    .get(&n.job_id)
                    .filter(|h| h.fence.execution_seq == n.execution_seq)
                    .map(|h| h.fence.clone());
                if let Some(fence) = fence {
                    self.unhold(&n.job_id, why);
                    if let Err(e) = self.shared.engine.release_job(&n.job_id, &fence).await {
                        tracing::warn!(error = %e, job = n.job_id, "giving back a nacked job failed; its lease will expire");
                    }
                }
            }
        }
        Ok(())
    }

    /// Renews the leases of the listed jobs this stream holds and says which it holds.
    async fn heartbeat(&self, h: pb::WorkerHeartbeat) -> Result<(), ApiError> {
        let states: Vec<(pb::ActiveJob, bool)> = {
            let held = self.held();
            h.jobs
                .into_iter()
                .map(|j| {
                    let holds = held
                        .get(&j.job_id)
                        .is_some_and(|h| h.fence.execution_seq == j.execution_seq);
                    (j, holds)
                })
                .collect()
        };
        let renew: Vec<String> = states
            .iter()
            .filter(|(_, holds)| *holds)
            .map(|(j, _)| j.job_id.clone())
            .collect();
        let renewed = match self
            .shared
            .engine
            .heartbeat(&self.shared.env, &self.shared.worker_id, &renew)
            .await
        {
            Ok(Some(renewed)) => renewed,
            Ok(None) => {
                return Err(ApiError::not_found(
                    "the worker's registration is gone; connect again",
                ));
            }
            Err(e) => {
                // The leases have slack: the next heartbeat tries again.
                tracing::warn!(error = %e, worker = %self.shared.worker_id, "renewing a stream worker's leases failed");
                return Ok(());
            }
        };
        let owed = self.shared.owed_slots.swap(0, Ordering::Relaxed);
        if owed > 0 {
            self.shared.slots.add_permits(owed);
        }
        let mut segments = Vec::with_capacity(states.len());
        for (j, holds) in states {
            let fresh = holds && renewed.contains(&j.job_id);
            if holds && !fresh {
                // Held here but its lease is gone (it expired into a failed attempt, or the
                // job was taken over): no longer this worker's.
                self.unhold(&j.job_id, Release::Done);
            }
            segments.push(pb::SegmentLeaseStatus {
                run_id: j.run_id,
                execution_seq: j.execution_seq,
                state: if fresh {
                    pb::LeaseState::Refreshed
                } else {
                    pb::LeaseState::Stale
                } as i32,
            });
        }
        self.send(pb::engine_message::Payload::LeaseRefresh(
            pb::LeaseRefreshResult { segments },
        ))
        .await;
        Ok(())
    }

    /// Applies one job's reports in the order they came. Steps queued together (a worker
    /// that does not wait for acks) are committed in one report, with the end when it is
    /// among them.
    async fn apply_reports(
        self,
        job: String,
        fence: Fence,
        mut next_step: i64,
        mut queue: mpsc::Receiver<Report>,
    ) {
        let mut labels: HashMap<String, StepLabel> = HashMap::new();
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = queue.try_recv() {
                let end = matches!(more, Report::End { .. });
                batch.push(more);
                if end {
                    break;
                }
            }
            let mut steps = Vec::new();
            let mut acks = Vec::new();
            let mut end = None;
            let mut refused = Vec::new();
            for report in batch {
                match report {
                    Report::Started { step_id, label } => {
                        labels.insert(step_id, label);
                    }
                    Report::Step {
                        ack,
                        step: Ok(mut step),
                    } => {
                        if let Some(label) = labels.remove(&step.id) {
                            step.name = label.name;
                            step.step_type = label.step_type;
                        }
                        steps.push(step);
                        acks.push(ack);
                    }
                    Report::Step { ack, step: Err(e) } => refused.push((ack, e)),
                    Report::End {
                        ack,
                        steps: more,
                        outcome,
                    } => match (more, outcome) {
                        (Ok(more), Ok(outcome)) => {
                            steps.extend(more);
                            end = Some((ack, outcome));
                        }
                        (Err(e), _) | (_, Err(e)) => refused.push((ack, e)),
                    },
                }
            }
            for (ack, e) in refused {
                self.ack(ack, Err(e)).await;
            }
            if steps.is_empty() && end.is_none() {
                continue;
            }
            let stepped = steps.len() as i64;
            let (end_ack, outcome) = match end {
                Some((ack, outcome)) => (Some(ack), outcome),
                None => (None, ReportOutcome::Progress),
            };
            if end_ack.is_some()
                && let Some(h) = self.held().get_mut(&job)
            {
                h.finishing = true;
            }
            let report = JobReport {
                dispatch_id: job.clone(),
                fence: fence.clone(),
                steps,
                step_offset: next_step,
                outcome,
            };
            let (answer, over) = match self.shared.engine.report_job(&report).await {
                Ok(()) if end_ack.is_none() => {
                    next_step += stepped;
                    (Ok(()), false)
                }
                Ok(()) => {
                    self.unhold(&job, Release::Done);
                    (Ok(()), true)
                }
                Err(EngineError::StaleExecution | EngineError::PausedAtBoundary) => {
                    if let Some(h) = self.unhold(&job, Release::Done) {
                        let reason = format!(
                            "run {}: the job is no longer this worker's (stale fence, paused or re-dispatched)",
                            h.run_id
                        );
                        self.send(pb::engine_message::Payload::Cancel(pb::CancelJob {
                            job_id: job.clone(),
                            reason,
                        }))
                        .await;
                    }
                    (Err(STALE.to_owned()), true)
                }
                Err(e) if end_ack.is_some() => {
                    // Neither SDK sends a result twice: the job goes back to the queue (no
                    // attempt used) rather than waiting for its lease.
                    tracing::warn!(error = %e, job, "committing a stream worker's result failed; the job goes back");
                    if self.unhold(&job, Release::Done).is_some()
                        && let Err(e) = self.shared.engine.release_job(&job, &fence).await
                    {
                        tracing::warn!(error = %e, job, "giving the job back failed; its lease will expire");
                    }
                    (Err(ApiError::from(e).message), true)
                }
                Err(e) => {
                    tracing::warn!(error = %e, job, "committing a stream worker's report failed");
                    (Err(ApiError::from(e).message), false)
                }
            };
            for ack in acks.into_iter().chain(end_ack) {
                self.ack(ack, answer.clone()).await;
            }
            if over {
                break;
            }
        }
        // Whatever is still queued for a job no longer held is stale.
        queue.close();
        while let Some(report) = queue.recv().await {
            if let Report::Step { ack, .. } | Report::End { ack, .. } = report {
                self.ack(ack, Err(STALE.into())).await;
            }
        }
    }

    /// Claims jobs while the worker has free capacity and sends them as assignments.
    async fn assign_jobs(self) {
        let shared = &self.shared;
        loop {
            let Ok(first) = shared.slots.acquire().await else {
                return; // draining
            };
            first.forget();
            let extra = shared.slots.available_permits();
            if let Ok(p) = shared
                .slots
                .try_acquire_many(u32::try_from(extra).unwrap_or(0))
            {
                p.forget();
            }
            let want = 1 + extra;
            let jobs = match shared
                .engine
                .poll(&shared.env, &shared.worker_id, want as i64, POLL_WAIT)
                .await
            {
                Ok(PollOutcome::Jobs(jobs)) => jobs,
                Ok(PollOutcome::Empty { .. }) => Vec::new(),
                Ok(PollOutcome::UnknownWorker) => {
                    let _ = shared
                        .tx
                        .send(Err(ApiError::not_found(
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
            shared.slots.add_permits(want - jobs.len());
            // All held before any is sent: a session that ends mid-batch gives back every one.
            let mut assignments = Vec::with_capacity(jobs.len());
            for job in jobs {
                let fence = Fence {
                    env_id: shared.env.clone(),
                    worker_id: shared.worker_id.clone(),
                    execution_seq: job.execution_seq,
                    lease_token: job.lease_token.clone(),
                };
                let (reports, queue) = mpsc::channel(REPORT_QUEUE);
                let applier = tokio::spawn(self.clone().apply_reports(
                    job.dispatch_id.clone(),
                    fence.clone(),
                    job.step_sequence_base,
                    queue,
                ));
                self.held().insert(
                    job.dispatch_id.clone(),
                    Held {
                        fence,
                        run_id: job.run.id.to_string(),
                        reports,
                        applier,
                        finishing: false,
                    },
                );
                assignments.push(wire::assignment(&job));
            }
            for assignment in assignments {
                if !self
                    .send(pb::engine_message::Payload::Job(assignment))
                    .await
                {
                    return;
                }
            }
            if shared.engine.shutdown_token().is_cancelled() {
                return;
            }
        }
    }

    /// Tells the worker when a run it holds ends without it (cancelled, timed out).
    async fn forward_cancellations(self) {
        let mut finished = self.shared.engine.bus().subscribe_runs();
        loop {
            let run = match finished.recv().await {
                Ok(run) => run,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let jobs: Vec<String> = self
                .held()
                .iter()
                .filter(|(_, h)| h.run_id == run.as_str() && !h.finishing)
                .map(|(job, _)| job.clone())
                .collect();
            for job_id in jobs {
                if self.unhold(&job_id, Release::Done).is_none() {
                    continue;
                }
                let cancel = pb::CancelJob {
                    job_id,
                    reason: format!("run {} ended (cancelled or timed out)", run.as_str()),
                };
                if !self.send(pb::engine_message::Payload::Cancel(cancel)).await {
                    return;
                }
            }
        }
    }
}
