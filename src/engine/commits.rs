//! Group commit: writes that arrive together (job reports from many workers over any
//! transport; events from many emitters) are applied in one transaction per kind, and each
//! caller is answered only after that commit. Nothing waits for a batch to fill: a committer
//! takes whatever is queued when it is free, so a lone write commits at once and a crowd
//! shares commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::domain::job::JobReport;
use crate::domain::time::Ts;
use crate::store::events::{Emission, EventOutcome};
use crate::store::execution::FenceOutcome;
use crate::store::{Backend, StoreError};

use super::Engine;

/// Writes applied in one transaction at most.
const MAX_BATCH: usize = 256;
/// Writes waiting for a committer; callers wait for room beyond this.
const QUEUE: usize = 4096;
/// How often a batch rolled back by a deadlock or serialization conflict is applied again.
const CONTENTION_RETRIES: usize = 3;

struct Pending<T, R> {
    item: T,
    done: oneshot::Sender<Result<R, StoreError>>,
}

/// One kind of write's queue, drained by its committers.
pub(crate) struct CommitQueue<T, R> {
    tx: mpsc::Sender<Pending<T, R>>,
    rx: Arc<Mutex<mpsc::Receiver<Pending<T, R>>>>,
    /// Committers are running (between `spawn_background` and shutdown).
    running: Arc<AtomicBool>,
}

impl<T, R> Default for CommitQueue<T, R> {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            running: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<T, R> CommitQueue<T, R> {
    /// Queues `item` and waits for its commit. `Err(item)` when no committer runs (before
    /// start, after shutdown): the caller applies it on its own.
    async fn submit(&self, item: T) -> Result<Result<R, StoreError>, T> {
        if !self.running.load(Ordering::Acquire) {
            return Err(item);
        }
        let (done, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = self.tx.send(Pending { item, done }).await {
            return Err(p.item);
        }
        // A dropped sender means the committers stopped after taking it without answering,
        // which they never do; answer as unavailable rather than hang.
        Ok(answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the commit queue stopped before answering".into(),
            ))
        }))
    }

    /// The next batch: at least one write (waits for it), then whatever else is queued. `None`
    /// at shutdown.
    async fn next_batch(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Vec<Pending<T, R>>> {
        let mut rx = self.rx.lock().await;
        let first = tokio::select! {
            first = rx.recv() => first,
            () = shutdown.cancelled() => None,
        }?;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// After shutdown: stops taking writes and returns those still queued.
    async fn close(&self) -> Vec<Pending<T, R>> {
        self.running.store(false, Ordering::Release);
        let mut rx = self.rx.lock().await;
        let mut rest = Vec::new();
        while let Ok(p) = rx.try_recv() {
            rest.push(p);
        }
        rest
    }
}

/// A job report and the lease it asks for.
pub(crate) struct QueuedReport {
    report: JobReport,
    lease_expires_at: Ts,
}

/// The group commits of the engine.
#[derive(Default)]
pub(crate) struct GroupCommits {
    reports: CommitQueue<QueuedReport, FenceOutcome>,
    events: CommitQueue<Emission, EventOutcome>,
}

/// Answers a batch: each write with its outcome, in order.
fn answer<T, R>(batch: Vec<Pending<T, R>>, outcomes: Vec<R>) {
    for (p, outcome) in batch.into_iter().zip(outcomes) {
        let _ = p.done.send(Ok(outcome));
    }
}

/// Applies `apply` again while contention (a deadlock, a serialization failure) rolled the
/// whole batch back; nobody has been answered yet.
async fn with_contention_retries<R, F, Fut>(
    what: &str,
    size: usize,
    mut apply: F,
) -> Result<R, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R, StoreError>>,
{
    let mut result = apply().await;
    for _ in 0..CONTENTION_RETRIES {
        match &result {
            Err(StoreError::Contention(e)) => {
                metrics::counter!("ironflow_commit_contention_retries_total").increment(1);
                tracing::info!(error = %e, batch = size, "{what} batch rolled back by contention; applying it again");
                result = apply().await;
            }
            _ => break,
        }
    }
    result
}

impl Engine {
    /// Applies a report through the group commit (directly when the committers are not
    /// running: before start, after shutdown).
    pub(crate) async fn commit_report(
        &self,
        report: &JobReport,
        lease_expires_at: Ts,
    ) -> Result<FenceOutcome, StoreError> {
        let queued = QueuedReport {
            report: report.clone(),
            lease_expires_at,
        };
        match self.inner.commits.reports.submit(queued).await {
            Ok(result) => result,
            Err(queued) => self.apply_report_alone(&queued).await,
        }
    }

    /// Stores an event and starts its runs through the group commit.
    pub(crate) async fn commit_event(
        &self,
        emission: Emission,
    ) -> Result<EventOutcome, StoreError> {
        match self.inner.commits.events.submit(emission).await {
            Ok(result) => result,
            Err(emission) => self.apply_event_alone(&emission).await,
        }
    }

    async fn apply_report_alone(&self, queued: &QueuedReport) -> Result<FenceOutcome, StoreError> {
        let reports = std::slice::from_ref(&queued.report);
        with_contention_retries("report", 1, || {
            self.store().report_jobs(reports, queued.lease_expires_at)
        })
        .await?
        .pop()
        .ok_or_else(|| StoreError::Internal("a report batch answered nothing".into()))
    }

    async fn apply_event_alone(&self, emission: &Emission) -> Result<EventOutcome, StoreError> {
        let emissions = std::slice::from_ref(emission);
        with_contention_retries("event", 1, || self.store().record_events(emissions))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Internal("an event batch answered nothing".into()))
    }

    /// The committers: per kind, one on SQLite (one writer anyway), two on Postgres so one
    /// batch's round trips overlap another's commit. Measured on `ironflow bench` (2 cores,
    /// C = 32): two report committers gave 10-20% more steps/s than four and 25% more than six
    /// (bigger batches, fewer statements per step).
    pub(crate) fn spawn_committers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let count = match self.store().backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        };
        let commits = &self.inner.commits;
        commits.reports.running.store(true, Ordering::Release);
        commits.events.running.store(true, Ordering::Release);
        let mut tasks = Vec::new();
        for _ in 0..count {
            let engine = self.clone();
            tasks.push(tokio::spawn(
                async move { engine.run_report_committer().await },
            ));
            let engine = self.clone();
            tasks.push(tokio::spawn(
                async move { engine.run_event_committer().await },
            ));
        }
        tasks
    }

    async fn run_report_committer(&self) {
        let queue = &self.inner.commits.reports;
        while let Some(batch) = queue.next_batch(self.shutdown_token()).await {
            self.commit_reports(batch).await;
        }
        // Reports queued before the committers stopped are still answered.
        let rest = queue.close().await;
        if !rest.is_empty() {
            self.commit_reports(rest).await;
        }
    }

    async fn run_event_committer(&self) {
        let queue = &self.inner.commits.events;
        while let Some(batch) = queue.next_batch(self.shutdown_token()).await {
            self.commit_events(batch).await;
        }
        let rest = queue.close().await;
        if !rest.is_empty() {
            self.commit_events(rest).await;
        }
    }

    async fn commit_reports(&self, batch: Vec<Pending<QueuedReport, FenceOutcome>>) {
        metrics::histogram!("ironflow_report_batch_size").record(batch.len() as f64);
        let reports: Vec<JobReport> = batch.iter().map(|p| p.item.report.clone()).collect();
        // One lease instant for the batch: the latest asked for.
        let lease = batch
            .iter()
            .map(|p| p.item.lease_expires_at)
            .max()
            .unwrap_or_else(Ts::now);
        let result = with_contention_retries("report", reports.len(), || {
            self.store().report_jobs(&reports, lease)
        })
        .await;
        match result {
            Ok(outcomes) => answer(batch, outcomes),
            // One bad report must not fail the others: apply each on its own.
            Err(_) if batch.len() > 1 => {
                for p in batch {
                    let _ = p.done.send(self.apply_report_alone(&p.item).await);
                }
            }
            Err(e) => {
                if let Some(p) = batch.into_iter().next() {
                    let _ = p.done.send(Err(e));
                }
            }
        }
    }

    async fn commit_events(&self, batch: Vec<Pending<Emission, EventOutcome>>) {
        metrics::histogram!("ironflow_event_batch_size").record(batch.len() as f64);
        let emissions: Vec<Emission> = batch.iter().map(|p| p.item.clone()).collect();
        let result = with_contention_retries("event", emissions.len(), || {
            self.store().record_events(&emissions)
        })
        .await;
        match result {
            Ok(outcomes) => answer(batch, outcomes),
            // One bad event must not fail the others: store each on its own.
            Err(_) if batch.len() > 1 => {
                for p in batch {
                    let _ = p.done.send(self.apply_event_alone(&p.item).await);
                }
            }
            Err(e) => {
                if let Some(p) = batch.into_iter().next() {
                    let _ = p.done.send(Err(e));
                }
            }
        }
    }
}
