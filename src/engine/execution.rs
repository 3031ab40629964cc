//! Durable execution for pull workers: registration, heartbeats, long-poll dispatch, acks and
//! reports under fencing, and the timer loop that makes sleeps and timeouts fire.

use std::time::Duration;

use tracing::Instrument as _;

use crate::domain::job::{Fence, JobReport};
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::execution::{
    ClaimRequest, ClaimedJob, FenceOutcome, WorkerRecord, WorkerRegistration,
};

use super::{Engine, EngineError};

/// What a worker says when it registers.
#[derive(Debug, Clone)]
pub struct WorkerHello {
    pub id: String,
    pub hostname: String,
    pub function_ids: Vec<String>,
    pub max_concurrent: i32,
    pub labels: serde_json::Value,
    pub version: serde_json::Value,
}

#[derive(Debug)]
pub enum PollOutcome {
    Jobs(Vec<ClaimedJob>),
    /// Nothing was due; `held` says whether the request waited for work before answering.
    Empty {
        held: bool,
    },
    /// The worker is not registered (it must register again).
    UnknownWorker,
}

/// The longest a poll is held, below the SDK's 30 s request timeout.
const MAX_POLL_WAIT: Duration = Duration::from_secs(25);
/// The timer loop wakes at least this often even when nothing is scheduled (safety sweep).
const SAFETY_SWEEP: Duration = Duration::from_secs(5);
/// The timer reads the schedule again, and sweeps, at most this often while commits keep
/// changing it.
const SCHEDULE_REREAD: Duration = Duration::from_millis(10);

impl Engine {
    fn lease_expiry(&self) -> Ts {
        let ttl = chrono::Duration::from_std(self.options().lease_ttl)
            .unwrap_or(chrono::Duration::seconds(90));
        Ts(Ts::now().0 + ttl)
    }

    pub async fn register_worker(
        &self,
        env: &EnvId,
        hello: WorkerHello,
    ) -> Result<(), EngineError> {
        if hello.id.trim().is_empty() || hello.id.len() > 256 {
            return Err(EngineError::InvalidArgument(
                "worker_id must be 1 to 256 characters".into(),
            ));
        }
        let registration = WorkerRegistration {
            env_id: env.clone(),
            id: hello.id,
            hostname: hello.hostname,
            function_ids: hello.function_ids,
            max_concurrent: hello.max_concurrent.max(1),
            labels: hello.labels,
            version: hello.version,
        };
        self.store().register_worker(&registration).await?;
        Ok(())
    }

    /// Records a heartbeat and renews the leases of the jobs the worker still holds; returns
    /// those renewed, `None` when the worker is not registered.
    pub async fn heartbeat(
        &self,
        env: &EnvId,
        worker: &str,
        job_ids: &[String],
    ) -> Result<Option<Vec<String>>, EngineError> {
        Ok(self
            .store()
            .heartbeat_worker(env, worker, job_ids, self.lease_expiry())
            .await?)
    }

    pub async fn list_workers(&self, env: &EnvId) -> Result<Vec<WorkerRecord>, EngineError> {
        Ok(self.store().list_workers(env).await?)
    }

    /// Workers heard from (registration or heartbeat, on either transport) within the lease TTL:
    /// the ones whose jobs would not yet be handed to another worker.
    pub async fn connected_workers(&self, env: &EnvId) -> Result<usize, EngineError> {
        let since = Ts::now().minus(self.options().lease_ttl);
        Ok(self
            .list_workers(env)
            .await?
            .iter()
            .filter(|w| w.last_heartbeat_at >= since)
            .count())
    }

    /// Claims up to `available` jobs, holding the request up to `wait` until work arrives.
    pub async fn poll(
        &self,
        env: &EnvId,
        worker: &str,
        available: i64,
        wait: Duration,
    ) -> Result<PollOutcome, EngineError> {
        let Some(function_ids) = self.store().worker_functions(env, worker).await? else {
            return Ok(PollOutcome::UnknownWorker);
        };
        if available <= 0 || function_ids.is_empty() {
            return Ok(PollOutcome::Empty { held: false });
        }
        let wait = wait.min(MAX_POLL_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let work = self.bus().work();
        loop {
            // Register for the wakeup before looking, so a commit in between is not missed.
            let notified = work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let request = ClaimRequest {
                env_id: env.clone(),
                worker_id: worker.to_owned(),
                function_ids: function_ids.clone(),
                limit: available.min(100),
                lease_expires_at: self.lease_expiry(),
                mode: crate::domain::function::ExecutionMode::Pull,
            };
            let claim = self.store().claim_jobs(&request).await?;
            self.bus().publish(&claim.effects);
            let mut jobs = claim.jobs;
            if !jobs.is_empty() {
                for job in &mut jobs {
                    job.secrets = self.secrets_for_run(env, job.definition.as_ref()).await;
                }
                super::observability::observe_dispatch(env, &mut jobs, Ts::now());
                return Ok(PollOutcome::Jobs(jobs));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(PollOutcome::Empty {
                    held: !wait.is_zero(),
                });
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.shutdown_token().cancelled() => return Ok(PollOutcome::Empty { held: false }),
            }
        }
    }

    pub async fn ack_job(&self, dispatch_id: &str, fence: &Fence) -> Result<(), EngineError> {
        match self
            .store()
            .ack_job(dispatch_id, fence, self.lease_expiry())
            .await?
        {
            FenceOutcome::Accepted(_) => Ok(()),
            FenceOutcome::Stale | FenceOutcome::Paused(_) => Err(EngineError::StaleExecution),
        }
    }

    /// Gives a claimed job back to the queue (due now, no attempt used), e.g. when the worker
    /// holding it disconnected; false when the fence no longer matches.
    pub async fn release_job(&self, dispatch_id: &str, fence: &Fence) -> Result<bool, EngineError> {
        let released = self.store().release_job(dispatch_id, fence).await?;
        if released {
            self.bus().work_ready();
        }
        Ok(released)
    }

    /// Applies a checkpoint or a result. Committed before this returns, so the worker's 2xx
    /// means the steps are durable.
    pub async fn report_job(&self, report: &JobReport) -> Result<(), EngineError> {
        report
            .check_storable()
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let ends = !matches!(report.outcome, crate::domain::job::ReportOutcome::Progress);
        let commit = crate::telemetry::commit_span(&report.dispatch_id, ends);
        match self
            .commit_report(report, self.lease_expiry())
            .instrument(commit)
            .await?
        {
            FenceOutcome::Accepted(effects) => {
                self.bus().publish(&effects);
                record_step_metrics(report);
                Ok(())
            }
            FenceOutcome::Paused(effects) => {
                self.bus().publish(&effects);
                record_step_metrics(report);
                Err(EngineError::PausedAtBoundary)
            }
            FenceOutcome::Stale => Err(EngineError::StaleExecution),
        }
    }

    /// Fires due timers and wakes pollers when scheduled work (a sleep's end, a retry's delay,
    /// an expired lease) becomes claimable. Sleeps until the next such instant.
    ///
    /// The plan is read from the database only after a sweep and when another node committed
    /// (its instants are not known here); this node's commits report their instants in their
    /// effects, which only ever move the plan earlier.
    pub(crate) async fn run_timers(&self) {
        let schedule = self.bus().schedule();
        let mut sweep = true;
        let mut plan: Option<Ts> = None;
        let mut read_again = true;
        let mut last_read: Option<tokio::time::Instant> = None;
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if sweep {
                last_sweep = tokio::time::Instant::now();
                match self.store().fire_timers(100).await {
                    Ok(effects) => self.bus().publish(&effects),
                    Err(e) => tracing::warn!(error = %e, "timer sweep failed"),
                }
                if let Err(e) = self.kv().kv_expire().await {
                    tracing::warn!(error = %e, "KV expiry sweep failed");
                }
                read_again = true;
            }
            // Listen for news before reading the schedule, so a commit in between is not missed.
            let changed = schedule.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let news = self.bus().take_schedule_news();
            if news.read_again && !read_again {
                // Other nodes may commit constantly: read at most every SCHEDULE_REREAD.
                if let Some(at) = last_read.map(|t| t + SCHEDULE_REREAD)
                    && at > tokio::time::Instant::now()
                {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.shutdown_token().cancelled() => return,
                    }
                }
                read_again = true;
            }
            if read_again {
                last_read = Some(tokio::time::Instant::now());
                // The read covers every instant reported before it.
                plan = self.store().next_due().await.ok().flatten();
                read_again = false;
            }
            plan = match (plan, news.earliest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // An instant that passed while it was being read is due now, not in a sweep's time.
            let pause = plan.map_or(SAFETY_SWEEP, |t| {
                (t.0 - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(SAFETY_SWEEP)
            });
            // Instants that keep coming due at once sweep at most every SCHEDULE_REREAD.
            let wake_at = (tokio::time::Instant::now() + pause).max(last_sweep + SCHEDULE_REREAD);
            let due = tokio::select! {
                () = tokio::time::sleep_until(wake_at) => true,
                // News only moves the plan: back to the top to take it in (no sweep).
                () = &mut changed => false,
                () = self.shutdown_token().cancelled() => return,
            };
            if due {
                // Whatever came due is claimable now.
                self.bus().work_ready();
                plan = None;
            }
            sweep = due;
        }
    }
}

/// The committed steps of a report: how many, and how long each ran (where the worker said).
fn record_step_metrics(report: &JobReport) {
    for step in &report.steps {
        let status = if step.completed {
            "completed"
        } else {
            "failed"
        };
        metrics::counter!("ironflow_steps_committed_total", "status" => status).increment(1);
        if let (Some(started), Some(ended)) = (step.started_at, step.ended_at)
            && let Ok(took) = (ended.0 - started.0).to_std()
        {
            metrics::histogram!("ironflow_step_duration_seconds").record(took.as_secs_f64());
        }
    }
}
