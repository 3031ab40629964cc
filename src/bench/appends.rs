//! `ironflow bench --mode appends`: entity-stream appends per second with an expected version
//! at concurrency `C` (each writer owns a stream and appends at the version it last saw, so every
//! append runs the optimistic-concurrency check), next to the database's raw single-row commit
//! rate at the same concurrency; append latency; and `ReadStream` of 1 000 events.
//!
//! Appends go over the real transport (Connect JSON on loopback) to a server in the bench's
//! process, so the figures include HTTP, the group commit and the commit itself.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::counters::{CpuPerStep, CpuTicks, TripsPerStep};
use super::raw_commits;
use super::report::Samples;

#[derive(Debug, Clone)]
pub struct AppendOptions {
    pub database_url: String,
    pub concurrency: usize,
    /// Appends per writer (each writer owns one stream).
    pub per_writer: usize,
    pub raw_for: Duration,
    /// Sequential `ReadStream` samples of 1 000 events.
    pub read_samples: usize,
}

#[derive(Debug, Serialize)]
pub struct AppendReport {
    pub backend: &'static str,
    pub concurrency: usize,
    pub appends: usize,
    pub elapsed_secs: f64,
    pub appends_per_sec: f64,
    pub raw_commits_per_sec: f64,
    pub ratio_vs_raw_commits: f64,
    pub append_p50_ms: f64,
    pub append_p99_ms: f64,
    pub conflicts: u64,
    pub read_1000_p50_ms: f64,
    pub read_1000_p99_ms: f64,
    /// Sent by the server over the append phase, per append.
    pub statements_per_append: f64,
    pub commits_per_append: f64,
    /// Over the append phase (`server_us` includes the bench's own HTTP client: one process).
    pub cpu: Option<CpuPerStep>,
}

impl AppendReport {
    pub fn summary_line(&self) -> String {
        let cpu = self.cpu.map_or_else(String::new, |c| {
            format!(
                "; CPU per append: server and client {:.0} us, rest (database) {:.0} us; machine {:.0}% busy",
                c.server_us, c.rest_us, c.machine_busy_pct
            )
        });
        let counters = format!(
            "\nironflow bench appends counters: {:.2} statements and {:.2} commits per append{cpu}",
            self.statements_per_append, self.commits_per_append
        );
        format!(
            "ironflow bench appends [{}] {} appends with expected_version, C={}: {:.0} appends/s; \
             raw single-row commits {:.0}/s (ratio {:.2}); append p50 {:.2} ms p99 {:.2} ms; \
             {} conflicts; ReadStream of 1000 events p50 {:.2} ms p99 {:.2} ms",
            self.backend,
            self.appends,
            self.concurrency,
            self.appends_per_sec,
            self.raw_commits_per_sec,
            self.ratio_vs_raw_commits,
            self.append_p50_ms,
            self.append_p99_ms,
            self.conflicts,
            self.read_1000_p50_ms,
            self.read_1000_p99_ms,
        ) + &counters
    }
}

struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    async fn call(&self, method: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!(
                "{}/ironflow.v1.EntityStreamService/{method}",
                self.base
            ))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

pub async fn run(options: AppendOptions) -> anyhow::Result<AppendReport> {
    anyhow::ensure!(
        options.concurrency > 0 && options.per_writer > 0,
        "--concurrency and --appends-per-writer must be at least 1"
    );
    let backend = if options.database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let raw =
        raw_commits::measure(&options.database_url, options.concurrency, options.raw_for).await?;
    let server = super::start_server(&options.database_url, &Default::default()).await?;
    let caller = std::sync::Arc::new(Caller {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency * 2)
            .build()?,
        base: format!("http://{}", server.local_addr),
    });
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let result = measure(&options, &caller, &prefix).await;
    server.shutdown.cancel();
    server.wait().await?;
    let measured = result?;
    let appends = options.concurrency * options.per_writer;
    let (elapsed, latencies, conflicts, reads) = (
        measured.elapsed,
        measured.latencies,
        measured.conflicts,
        measured.reads,
    );
    let per_sec = appends as f64 / elapsed.as_secs_f64();
    Ok(AppendReport {
        backend,
        concurrency: options.concurrency,
        appends,
        elapsed_secs: elapsed.as_secs_f64(),
        appends_per_sec: per_sec,
        raw_commits_per_sec: raw.per_sec(),
        ratio_vs_raw_commits: per_sec / raw.per_sec().max(f64::EPSILON),
        append_p50_ms: latencies.percentile_ms(50.0),
        append_p99_ms: latencies.percentile_ms(99.0),
        conflicts,
        read_1000_p50_ms: reads.percentile_ms(50.0),
        read_1000_p99_ms: reads.percentile_ms(99.0),
        statements_per_append: measured.trips.statements,
        commits_per_append: measured.trips.commits,
        cpu: measured.cpu,
    })
}

struct Measured {
    elapsed: Duration,
    latencies: Samples,
    conflicts: u64,
    reads: Samples,
    trips: TripsPerStep,
    cpu: Option<CpuPerStep>,
}

async fn measure(
    options: &AppendOptions,
    caller: &std::sync::Arc<Caller>,
    prefix: &str,
) -> anyhow::Result<Measured> {
    // Warm up connections and caches.
    let (status, body) = caller
        .call(
            "AppendEvent",
            &json!({"entityId": format!("{prefix}-warm"), "entityType": "bench",
                    "eventName": "bench.warm", "data": {}, "expectedVersion": "-1"}),
        )
        .await?;
    anyhow::ensure!(status == 200, "warm-up append answered {status}: {body}");

    let trips_before = crate::store::sql::RoundTrips::so_far();
    let cpu_before = CpuTicks::read(None);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..options.concurrency {
        let caller = caller.clone();
        let entity = format!("{prefix}-{w}");
        let count = options.per_writer;
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut conflicts = 0u64;
            let mut version = 0i64;
            while version < count as i64 {
                let sent = Instant::now();
                let (status, body) = caller
                    .call(
                        "AppendEvent",
                        &json!({"entityId": entity, "entityType": "bench",
                                "eventName": "bench.appended", "data": {"n": version},
                                "expectedVersion": version.to_string()}),
                    )
                    .await?;
                match status {
                    200 => {
                        samples.push(sent.elapsed());
                        version = body["entityVersion"]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .or_else(|| body["entityVersion"].as_i64())
                            .context("an append answered no entityVersion")?;
                    }
                    409 => conflicts += 1,
                    other => anyhow::bail!("an append answered {other}: {body}"),
                }
            }
            Ok::<_, anyhow::Error>((samples, conflicts))
        }));
    }
    let mut latencies = Samples::default();
    let mut conflicts = 0;
    for t in tasks {
        let (samples, c) = t.await.context("a writer panicked")??;
        latencies.extend(samples);
        conflicts += c;
    }
    let elapsed = started.elapsed();
    let appends = (options.concurrency * options.per_writer) as u64;
    let trips = TripsPerStep::between(
        trips_before,
        crate::store::sql::RoundTrips::so_far(),
        appends,
    );
    let cpu = match (cpu_before, CpuTicks::read(None)) {
        (Some(before), Some(after)) => Some(CpuPerStep::between(before, after, appends)),
        _ => None,
    };

    // ReadStream of 1 000 events: a stream filled to 1 000 (writer 0's, topped up if shorter).
    let entity = format!("{prefix}-read");
    for n in 0..1000 {
        let (status, body) = caller
            .call(
                "AppendEvent",
                &json!({"entityId": entity, "entityType": "bench", "eventName": "bench.appended",
                        "data": {"n": n, "pad": "x".repeat(200)}, "expectedVersion": "-1"}),
            )
            .await?;
        anyhow::ensure!(
            status == 200,
            "filling the read stream answered {status}: {body}"
        );
    }
    let mut reads = Samples::default();
    for _ in 0..options.read_samples {
        let sent = Instant::now();
        let (status, body) = caller
            .call("ReadStream", &json!({"entityId": entity, "limit": 1000}))
            .await?;
        anyhow::ensure!(status == 200, "ReadStream answered {status}: {body}");
        let got = body["events"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(got == 1000, "ReadStream returned {got} events, not 1000");
        reads.push(sent.elapsed());
    }
    Ok(Measured {
        elapsed,
        latencies,
        conflicts,
        reads,
        trips,
        cpu,
    })
}
