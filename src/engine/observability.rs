//! Observability: the figures the dashboard's overview shows, the Prometheus gauges (sampled
//! from the database, so every node reports the cluster's state), and the histograms recorded
//! where work is dispatched and runs end.
//!
//! Labels are low-cardinality only: environment, function, status, projection — never a run id.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Engine, EngineError};
use crate::domain::breaker::BreakerState;
use crate::domain::latency::{LatencySummary, summarize};
use crate::domain::lifecycle::EndedRun;
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::execution::ClaimedJob;
use crate::store::observability::QueueDepth;
use crate::store::push::BreakerRecord;

/// How often the gauges are read from the database.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// How many of the newest runs the overview's schedule-to-start figure looks at.
const START_DELAY_SAMPLE: i64 = 2000;

/// What the overview page shows besides the run counts.
#[derive(Debug, Clone)]
pub struct Overview {
    pub queue: Vec<QueueDepth>,
    /// Creation to first dispatch of the newest runs, in milliseconds.
    pub schedule_to_start_ms: LatencySummary,
    pub workers: usize,
    pub open_breakers: Vec<BreakerRecord>,
}

impl Engine {
    pub async fn overview(&self, env: &EnvId) -> Result<Overview, EngineError> {
        let store = self.store();
        let queue = store.queue_depths(Some(env), Ts::now()).await?;
        let delays = store.recent_start_delays(env, START_DELAY_SAMPLE).await?;
        let schedule_to_start_ms = summarize(
            delays
                .iter()
                .map(|d| (d.started_at.millis() - d.created_at.millis()) as f64),
        );
        let workers = self.connected_workers(env).await?;
        let open_breakers = self
            .list_breakers(env)
            .await?
            .into_iter()
            .filter(|b| b.breaker.state != BreakerState::Closed)
            .collect();
        Ok(Overview {
            queue,
            schedule_to_start_ms,
            workers,
            open_breakers,
        })
    }

    /// Samples the gauges every [`GAUGE_INTERVAL`] until shutdown. A label set seen once keeps
    /// being reported (0 when its rows are gone), so a drained queue reads 0, not "no data".
    pub async fn run_gauge_sampler(&self) {
        let mut seen = SeenLabels::default();
        loop {
            if let Err(e) = self.sample_gauges(&mut seen).await {
                tracing::warn!(error = %e, "sampling the gauges failed");
            }
            tokio::select! {
                () = tokio::time::sleep(GAUGE_INTERVAL) => {}
                () = self.shutdown_token().cancelled() => return,
            }
        }
    }

    async fn sample_gauges(&self, seen: &mut SeenLabels) -> Result<(), EngineError> {
        let store = self.store();
        let now = Ts::now();
        let mut envs = BTreeSet::new();
        let mut functions = BTreeSet::new();
        for q in store.queue_depths(None, now).await? {
            envs.insert(q.env_id.clone());
            functions.insert((q.env_id.clone(), q.function_id.clone()));
            let labels = [("environment", q.env_id), ("function", q.function_id)];
            metrics::gauge!("ironflow_queue_depth", &labels).set(q.ready as f64);
            metrics::gauge!("ironflow_jobs_scheduled", &labels).set(q.scheduled as f64);
            metrics::gauge!("ironflow_jobs_leased", &labels).set(q.leased as f64);
        }
        // A function archived or deleted since the last sample has no jobs left to count.
        for (env, function) in seen.functions.difference(&functions) {
            let labels = [("environment", env.clone()), ("function", function.clone())];
            metrics::gauge!("ironflow_queue_depth", &labels).set(0.0);
            metrics::gauge!("ironflow_jobs_scheduled", &labels).set(0.0);
            metrics::gauge!("ironflow_jobs_leased", &labels).set(0.0);
        }
        seen.functions = functions;
        let workers = store
            .connected_worker_counts(now.minus(self.options().lease_ttl))
            .await?;
        let breakers = store.open_breaker_counts().await?;
        envs.extend(seen.envs.iter().cloned());
        envs.extend(workers.iter().map(|w| w.env_id.clone()));
        envs.extend(breakers.iter().map(|b| b.env_id.clone()));
        for env in &envs {
            let count = |rows: &[crate::store::observability::EnvCount]| {
                rows.iter()
                    .find(|r| &r.env_id == env)
                    .map_or(0, |r| r.count)
            };
            metrics::gauge!("ironflow_workers_connected", "environment" => env.clone())
                .set(count(&workers) as f64);
            metrics::gauge!("ironflow_circuit_breakers_open", "environment" => env.clone())
                .set(count(&breakers) as f64);
        }
        seen.envs = envs;
        let mut projections = BTreeSet::new();
        for p in store.all_projection_names().await? {
            projections.insert((p.env_id.clone(), p.name.clone()));
            let env = EnvId::from_stored(p.env_id.clone());
            match self.projection_report(&env, &p.name).await {
                Ok(report) => {
                    let labels = [("environment", p.env_id), ("projection", p.name)];
                    metrics::gauge!("ironflow_projection_lag_events", &labels)
                        .set(report.lag_events as f64);
                    metrics::gauge!("ironflow_projection_lag_seconds", &labels)
                        .set(report.lag_seconds);
                }
                Err(e) => tracing::debug!(error = %e, projection = %p.name, "projection lag"),
            }
        }
        for (env, name) in seen.projections.difference(&projections) {
            let labels = [("environment", env.clone()), ("projection", name.clone())];
            metrics::gauge!("ironflow_projection_lag_events", &labels).set(0.0);
            metrics::gauge!("ironflow_projection_lag_seconds", &labels).set(0.0);
        }
        seen.projections = projections;
        Ok(())
    }
}

#[derive(Default)]
struct SeenLabels {
    envs: BTreeSet<String>,
    functions: BTreeSet<(String, String)>,
    projections: BTreeSet<(String, String)>,
}

/// Dispatched jobs: the counter, each one's wait from due to claimed (schedule-to-start), and
/// (while OTLP tracing is on) a dispatch span in the run's trace whose context the job carries.
pub(crate) fn observe_dispatch(env: &EnvId, jobs: &mut [ClaimedJob], now: Ts) {
    metrics::counter!("ironflow_jobs_dispatched_total").increment(jobs.len() as u64);
    for job in jobs.iter_mut() {
        job.trace = crate::telemetry::dispatch(
            &job.dispatch_id,
            job.run.id.as_str(),
            job.run.function_id.as_str(),
            job.run.attempt,
            job.event.as_ref().and_then(|e| e.traceparent.as_deref()),
        );
        let waited = (now.millis() - job.due_at.millis()).max(0) as f64 / 1000.0;
        metrics::histogram!(
            "ironflow_schedule_to_start_seconds",
            "environment" => env.as_str().to_owned(),
            "function" => job.run.function_id.as_str().to_owned(),
        )
        .record(waited);
    }
}

/// Runs that ended in a commit: creation to end, by function and final status.
pub(crate) fn record_ended(runs: &[EndedRun], now: Ts) {
    for run in runs {
        let took = (now.millis() - run.created_at.millis()).max(0) as f64 / 1000.0;
        metrics::histogram!(
            "ironflow_run_duration_seconds",
            "environment" => run.env.as_str().to_owned(),
            "function" => run.function_id.as_str().to_owned(),
            "status" => run.status.as_str(),
        )
        .record(took);
    }
}
