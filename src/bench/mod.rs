//! `ironflow bench`: durable steps per second through the Rust SDK worker against a database,
//! next to that database's own raw single-row commit rate at the same concurrency, plus
//! event → first step start, per-step commit and sync-trigger latencies, and the counters that
//! explain them (CPU per step by process, statements and commits per step).
//!
//! It runs a server in the bench's process (development mode, loopback, a free port) on the given
//! database, registers its functions under a fresh prefix (so repeated runs on one database
//! never collide) and drives them with an SDK worker of concurrency `C` in a second process
//! (or, with `--in-process-worker`, in the bench's). `--backlog N` first seeds `N` queued runs
//! of an unserved function and history behind them. `--mode appends` measures entity-stream
//! appends instead ([`appends`]); `--mode cron` how late cron ticks start their runs ([`cron`]); `--mode sql-projection` a SQL projection's apply rate and
//! append-to-visible latency ([`projection`]); `--mode authz` the authorization overhead per
//! request ([`authz`]).

mod appends;
mod authz;
mod backlog;
mod counters;
mod cron;
mod projection;
mod raw_commits;
mod report;
mod worker_side;
mod workload;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use ironflow_sdk::Client;
use serde_json::json;
use tokio::sync::Notify;

pub use appends::{AppendOptions, AppendReport, run as run_appends};
pub use authz::{AuthzOptions, AuthzReport, run as run_authz};
pub use backlog::Backlog;
pub use cron::{CronBenchOptions, CronReport, run as run_cron};
pub use projection::{ProjectionBenchOptions, ProjectionReport, run as run_sql_projection};
pub use report::{BenchReport, Samples};
pub use worker_side::{WorkerOptions, serve as serve_worker};
pub use workload::Workload;

pub use counters::CpuPerStep;
use counters::{CpuTicks, TripsPerStep};
use workload::{Observation, Observe, unix_micros};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub database_url: String,
    /// Postgres: the server's schema (`--db-schema`).
    pub schema: crate::store::pg_layout::DbSchema,
    pub workflows: usize,
    pub steps: usize,
    pub concurrency: usize,
    /// Sequential samples for the latency figures (event → first step, sync trigger).
    pub latency_samples: usize,
    /// How long the raw commit rate is measured.
    pub raw_for: Duration,
    /// Run the worker as a task of this process instead of its own process.
    pub in_process_worker: bool,
    /// Work queued behind the measured runs.
    pub backlog: Backlog,
    /// Server nodes on the one database (Postgres), each with its own worker; the events and
    /// the `concurrency` jobs in flight are spread over them.
    pub nodes: usize,
}

/// What the worker's handlers reported.
#[derive(Default)]
struct Observed {
    /// Runs of the throughput function that finished their last step.
    finished: Mutex<HashSet<String>>,
    all_finished: Notify,
    /// Time each step took, its commit included (the step bodies do nothing).
    step_commits: Mutex<Samples>,
    /// When each latency probe's first step started (wall clock, µs), by probe number.
    first_starts: Mutex<HashMap<u64, u64>>,
    first_started: Notify,
}

impl Observed {
    fn note(&self, observation: Observation) {
        match observation {
            Observation::StepCommitted { micros } => {
                lock(&self.step_commits).push(Duration::from_micros(micros));
            }
            Observation::Finished { run_id } => {
                lock(&self.finished).insert(run_id);
                self.all_finished.notify_waiters();
            }
            Observation::FirstStarted {
                probe,
                at_unix_micros,
            } => {
                lock(&self.first_starts).insert(probe, at_unix_micros);
                self.first_started.notify_waiters();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The server a bench measures: in this process, development mode, loopback, a free port.
async fn start_server(
    database_url: &str,
    schema: &crate::store::pg_layout::DbSchema,
) -> anyhow::Result<crate::server::Server> {
    let mut database = crate::store::DbOptions::url(database_url);
    database.postgres.schema = schema.clone();
    crate::server::start(
        crate::server::ServeOptions {
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            database,
            dev: true,
            bootstrap_key_file: None,
            max_payload_bytes: 1 << 20,
            lease_ttl: Duration::from_secs(90),
            master_key: None,
            nats_url: None,
            schema_enforcement: Default::default(),
            projection_lease_ttl: std::time::Duration::from_secs(15),
        },
        None,
    )
    .await
    .context("starting the in-process server")
}

pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        options.workflows > 0 && options.steps > 0 && options.concurrency > 0,
        "--workflows, --steps and --concurrency must be at least 1"
    );
    let backend = if options.database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    // The yardstick first, on an idle database.
    let raw =
        raw_commits::measure(&options.database_url, options.concurrency, options.raw_for).await?;

    anyhow::ensure!(
        options.nodes >= 1 && (options.nodes == 1 || backend == "postgres"),
        "--nodes above 1 needs Postgres (SQLite has one server per file)"
    );
    let mut servers = Vec::new();
    for _ in 0..options.nodes {
        servers.push(start_server(&options.database_url, &options.schema).await?);
    }
    let bases: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.local_addr))
        .collect();
    let workload = Workload {
        prefix: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        steps: options.steps,
    };
    let observed = Arc::new(Observed::default());
    let observe: Observe = {
        let observed = observed.clone();
        Arc::new(move |o| observed.note(o))
    };

    let clients = bases
        .iter()
        .map(|base| Client::new(base, ""))
        .collect::<Result<Vec<_>, _>>()?;
    let client = &clients[0];
    // Registered before the first event: the worker registers them too, but only once its
    // stream is up, and an event emitted before that would start no run.
    for f in workload.served(&observe) {
        client.register(&f).await?;
    }
    client.register(&workload.backlog_function()).await?;
    let seeded = backlog::seed(
        &options.database_url,
        &workload.backlog_function_id(),
        options.backlog,
        &options.schema,
    )
    .await?;

    let per_node = options.concurrency.div_ceil(options.nodes).max(1);
    let mut workers = Vec::new();
    for base in &bases {
        let worker_options = WorkerOptions {
            server_url: base.clone(),
            workload: workload.clone(),
            concurrency: per_node,
        };
        workers.push(
            worker_side::RunningWorker::start(
                &worker_options,
                options.in_process_worker,
                observe.clone(),
            )
            .await?,
        );
    }
    // CPU per step is the one worker's when there is one.
    let worker_pid = if workers.len() == 1 {
        workers[0].pid()
    } else {
        None
    };
    let result = measure(&options, &workload, &clients, &observed, worker_pid).await;
    let mut stopped = Ok(());
    for worker in workers {
        stopped = stopped.and(worker.stop().await);
    }
    for server in servers {
        server.shutdown.cancel();
        server.wait().await?;
    }
    let measured = result?;
    stopped?;

    let elapsed = measured.throughput_elapsed.as_secs_f64();
    let steps_total = (options.workflows * options.steps) as f64;
    let steps_per_sec = steps_total / elapsed;
    let commits = lock(&observed.step_commits).clone();
    Ok(BenchReport {
        backend,
        workflows: options.workflows,
        steps: options.steps,
        concurrency: options.concurrency,
        nodes: options.nodes,
        worker: if options.in_process_worker {
            "in-process"
        } else {
            "own process"
        },
        backlog_runs: options.backlog.runs,
        backlog_history: options.backlog.history,
        backlog_seed_secs: seeded.as_secs_f64(),
        elapsed_secs: elapsed,
        steps_per_sec,
        runs_per_sec: options.workflows as f64 / elapsed,
        raw_commits_per_sec: raw.per_sec(),
        ratio_vs_raw_commits: steps_per_sec / raw.per_sec().max(f64::EPSILON),
        step_commit_p50_ms: commits.percentile_ms(50.0),
        step_commit_p99_ms: commits.percentile_ms(99.0),
        event_to_start_p50_ms: measured.first_step.percentile_ms(50.0),
        event_to_start_p99_ms: measured.first_step.percentile_ms(99.0),
        sync_trigger_p50_ms: measured.sync_trigger.percentile_ms(50.0),
        sync_trigger_p99_ms: measured.sync_trigger.percentile_ms(99.0),
        latency_samples: options.latency_samples,
        statements_per_step: measured.trips.statements,
        commits_per_step: measured.trips.commits,
        cpu: measured.cpu,
    })
}

struct Measured {
    throughput_elapsed: Duration,
    /// Over the throughput phase.
    trips: TripsPerStep,
    cpu: Option<CpuPerStep>,
    first_step: Samples,
    sync_trigger: Samples,
}

async fn measure(
    options: &BenchOptions,
    workload: &Workload,
    clients: &[Client],
    observed: &Arc<Observed>,
    worker_pid: Option<u32>,
) -> anyhow::Result<Measured> {
    let client = &clients[0];
    // Warm up: the worker is serving once this answers, and connections and caches are not
    // in the figures.
    client
        .trigger_sync(
            &workload.sync_event(),
            json!({"n": 0}),
            Duration::from_secs(30),
        )
        .await?;

    // Throughput: every workflow emitted at once (a few emitters), all steps durable.
    let trips_before = crate::store::sql::RoundTrips::so_far();
    let cpu_before = CpuTicks::read(worker_pid);
    let started = Instant::now();
    let emitters = 8.min(options.workflows);
    let mut tasks = Vec::new();
    for e in 0..emitters {
        // The emitters spread over the nodes.
        let client = clients[e % clients.len()].clone();
        let name = workload.steps_event();
        let count = options.workflows / emitters + usize::from(e < options.workflows % emitters);
        tasks.push(tokio::spawn(async move {
            for n in 0..count {
                client.emit(&name, json!({"e": e, "n": n})).await?;
            }
            Ok::<(), ironflow_sdk::SdkError>(())
        }));
    }
    for t in tasks {
        t.await.context("an emitter panicked")??;
    }
    let deadline = Duration::from_secs(600);
    tokio::time::timeout(deadline, async {
        loop {
            let notified = observed.all_finished.notified();
            if lock(&observed.finished).len() >= options.workflows {
                return;
            }
            notified.await;
        }
    })
    .await
    .context("the workflows did not finish within 10 minutes")?;
    let throughput_elapsed = started.elapsed();
    let steps = (options.workflows * options.steps) as u64;
    let cpu = match (cpu_before, CpuTicks::read(worker_pid)) {
        (Some(before), Some(after)) => Some(CpuPerStep::between(before, after, steps)),
        _ => None,
    };
    let trips = TripsPerStep::between(trips_before, crate::store::sql::RoundTrips::so_far(), steps);

    // Event → first step start, one event at a time.
    let mut first_step = Samples::default();
    for i in 0..options.latency_samples as u64 {
        let sent = unix_micros(SystemTime::now());
        client
            .emit(&workload.first_event(), json!({"i": i}))
            .await?;
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = observed.first_started.notified();
                if let Some(at) = lock(&observed.first_starts).get(&i) {
                    return *at;
                }
                notified.await;
            }
        })
        .await
        .context("a latency probe did not start within 30 s")?;
        first_step.push(Duration::from_micros(started.saturating_sub(sent)));
    }

    // Sync 1-step trigger round trip.
    let mut sync_trigger = Samples::default();
    for i in 0..options.latency_samples {
        let sent = Instant::now();
        client
            .trigger_sync(
                &workload.sync_event(),
                json!({"n": i}),
                Duration::from_secs(30),
            )
            .await?;
        sync_trigger.push(sent.elapsed());
    }
    Ok(Measured {
        throughput_elapsed,
        trips,
        cpu,
        first_step,
        sync_trigger,
    })
}
