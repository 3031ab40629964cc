//! `ironflow bench`: durable steps per second through the Rust SDK worker against a database,
//! next to that database's own raw single-row commit rate at the same concurrency, plus
//! event → first step start, per-step commit and sync-trigger latencies.
//!
//! It runs an in-process server (development mode, loopback, a free port) on the given
//! database, registers three functions under a fresh prefix (so repeated runs on one database
//! never collide) and drives them with an SDK worker of concurrency `C`.

mod raw_commits;
mod report;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ironflow_sdk::{Client, Ctx, FnError, Function, Worker};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use report::{BenchReport, Samples};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub database_url: String,
    pub workflows: usize,
    pub steps: usize,
    pub concurrency: usize,
    /// Sequential samples for the latency figures (event → first step, sync trigger).
    pub latency_samples: usize,
    /// How long the raw commit rate is measured.
    pub raw_for: Duration,
}

/// Shared between the bench and the handlers the worker runs.
#[derive(Default)]
struct Observed {
    /// Runs of the throughput function that finished their last step.
    finished: Mutex<HashSet<String>>,
    all_finished: Notify,
    /// Time each step took, its commit included (the step bodies do nothing).
    step_commits: Mutex<Samples>,
    /// When each latency probe's first step started, by probe number.
    first_starts: Mutex<HashMap<u64, Instant>>,
    first_started: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    let server = crate::server::start(
        crate::server::ServeOptions {
            bind: std::net::IpAddr::from([127, 0, 0, 1]),
            port: 0,
            database_url: options.database_url.clone(),
            dev: true,
            bootstrap_key_file: None,
            max_payload_bytes: 1 << 20,
            lease_ttl: Duration::from_secs(90),
            master_key: None,
            nats_url: None,
        },
        None,
    )
    .await
    .context("starting the in-process server")?;
    let base = format!("http://{}", server.local_addr);
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let observed = Arc::new(Observed::default());

    let functions = [
        steps_function(&prefix, options.steps, observed.clone()),
        first_step_function(&prefix, observed.clone()),
        sync_function(&prefix),
    ];
    let client = Client::new(&base, "")?;
    // Registered before the first event: the worker registers them too, but only once its
    // stream is up, and an event emitted before that would start no run.
    for f in &functions {
        client.register(f).await?;
    }
    let stop = CancellationToken::new();
    let mut builder = Worker::builder(&base, "")
        .concurrency(u32::try_from(options.concurrency).unwrap_or(u32::MAX));
    for f in functions {
        builder = builder.function(f);
    }
    let worker = builder.build()?;
    let worker_task = {
        let stop = stop.clone();
        tokio::spawn(async move { worker.run(stop).await })
    };
    let result = measure(&options, &prefix, &client, &observed).await;
    stop.cancel();
    let _ = worker_task.await;
    server.shutdown.cancel();
    server.wait().await?;
    let measured = result?;

    let elapsed = measured.throughput_elapsed.as_secs_f64();
    let steps_total = (options.workflows * options.steps) as f64;
    let steps_per_sec = steps_total / elapsed;
    let commits = lock(&observed.step_commits).clone();
    Ok(BenchReport {
        backend,
        workflows: options.workflows,
        steps: options.steps,
        concurrency: options.concurrency,
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
    })
}

struct Measured {
    throughput_elapsed: Duration,
    first_step: Samples,
    sync_trigger: Samples,
}

async fn measure(
    options: &BenchOptions,
    prefix: &str,
    client: &Client,
    observed: &Arc<Observed>,
) -> anyhow::Result<Measured> {
    // Warm up: one of each, so connections and caches are not in the figures.
    client
        .trigger_sync(
            &format!("{prefix}.sync"),
            json!({"n": 0}),
            Duration::from_secs(30),
        )
        .await?;

    // Throughput: every workflow emitted at once (a few emitters), all steps durable.
    let started = Instant::now();
    let emitters = 8.min(options.workflows);
    let mut tasks = Vec::new();
    for e in 0..emitters {
        let client = client.clone();
        let name = format!("{prefix}.steps");
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

    // Event → first step start, one event at a time.
    let mut first_step = Samples::default();
    for i in 0..options.latency_samples as u64 {
        let sent = Instant::now();
        client
            .emit(&format!("{prefix}.first"), json!({"i": i}))
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
        first_step.push(started.saturating_duration_since(sent));
    }

    // Sync 1-step trigger round trip.
    let mut sync_trigger = Samples::default();
    for i in 0..options.latency_samples {
        let sent = Instant::now();
        client
            .trigger_sync(
                &format!("{prefix}.sync"),
                json!({"n": i}),
                Duration::from_secs(30),
            )
            .await?;
        sync_trigger.push(sent.elapsed());
    }
    Ok(Measured {
        throughput_elapsed,
        first_step,
        sync_trigger,
    })
}

/// `S` steps that do nothing but be durable.
fn steps_function(prefix: &str, steps: usize, observed: Arc<Observed>) -> Function {
    Function::new(format!("{prefix}-steps"))
        .trigger(format!("{prefix}.steps"))
        .handler(move |ctx: Ctx, _input: Value| {
            let observed = observed.clone();
            async move {
                for i in 0..steps {
                    let t = Instant::now();
                    ctx.run(&format!("s{i}"), || async move { Ok(i) }).await?;
                    lock(&observed.step_commits).push(t.elapsed());
                }
                lock(&observed.finished).insert(ctx.run_id().to_owned());
                observed.all_finished.notify_waiters();
                Ok::<_, FnError>(steps)
            }
        })
}

/// One step that notes when it started.
fn first_step_function(prefix: &str, observed: Arc<Observed>) -> Function {
    Function::new(format!("{prefix}-first"))
        .trigger(format!("{prefix}.first"))
        .handler(move |ctx: Ctx, input: Value| {
            let observed = observed.clone();
            async move {
                let i = input["i"].as_u64().unwrap_or(u64::MAX);
                ctx.run("first", || async move {
                    lock(&observed.first_starts).insert(i, Instant::now());
                    observed.first_started.notify_waiters();
                    Ok(i)
                })
                .await
            }
        })
}

/// One step, answered synchronously.
fn sync_function(prefix: &str) -> Function {
    Function::new(format!("{prefix}-sync"))
        .trigger(format!("{prefix}.sync"))
        .handler(|ctx: Ctx, input: Value| async move {
            ctx.run("echo", || async move { Ok(input) }).await
        })
}
