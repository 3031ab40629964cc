//! `ironflow bench --mode cron`: how late cron ticks start their runs. `F` functions with a
//! per-second schedule are registered on a server in the bench's process; once `T` ticks have
//! started runs, each run's lateness is its creation instant minus the tick its event names
//! (p50 / p99). No worker is needed: a tick's run is created when it fires.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::report::Samples;

#[derive(Debug, Clone)]
pub struct CronBenchOptions {
    pub database_url: String,
    /// Functions ticking every second.
    pub functions: usize,
    /// Ticks (runs) measured.
    pub ticks: usize,
}

#[derive(Debug, Serialize)]
pub struct CronReport {
    pub backend: &'static str,
    pub functions: usize,
    pub ticks: usize,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
}

impl CronReport {
    pub fn summary_line(&self) -> String {
        format!(
            "ironflow bench cron [{}] {} ticks of {} per-second schedules: tick -> run created p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            self.backend,
            self.ticks,
            self.functions,
            self.lateness_p50_ms,
            self.lateness_p99_ms,
            self.lateness_max_ms
        )
    }
}

pub async fn run(options: CronBenchOptions) -> anyhow::Result<CronReport> {
    anyhow::ensure!(
        options.functions > 0 && options.ticks > 0,
        "--cron-functions and --ticks must be at least 1"
    );
    let backend = if options.database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let server = super::start_server(&options.database_url, &Default::default()).await?;
    let base = format!("http://{}", server.local_addr);
    let result = measure(&options, &base).await;
    server.shutdown.cancel();
    server.wait().await?;
    let lateness = result?;
    Ok(CronReport {
        backend,
        functions: options.functions,
        ticks: lateness.len(),
        lateness_p50_ms: lateness.percentile_ms(50.0),
        lateness_p99_ms: lateness.percentile_ms(99.0),
        lateness_max_ms: lateness.percentile_ms(100.0),
    })
}

async fn measure(options: &CronBenchOptions, base: &str) -> anyhow::Result<Samples> {
    let http = reqwest::Client::new();
    let prefix = format!("bench-cron-{}", std::process::id());
    let ids: Vec<String> = (0..options.functions)
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    for id in &ids {
        let response = http
            .post(format!(
                "{base}/ironflow.v1.IronflowService/RegisterFunction"
            ))
            .header("content-type", "application/json")
            .body(json!({"id": id, "triggers": [{"cron": "* * * * * *"}]}).to_string())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "RegisterFunction answered {}",
            response.status()
        );
    }
    // A tick for every function each second, plus a margin for the first.
    let expected = Duration::from_secs((options.ticks / options.functions) as u64 + 5);
    let started = Instant::now();
    loop {
        let runs = collect(&http, base, &ids).await?;
        if runs.len() >= options.ticks {
            let mut samples = Samples::default();
            for run in runs.iter().take(options.ticks) {
                samples.push(lateness(run)?);
            }
            return Ok(samples);
        }
        anyhow::ensure!(
            started.elapsed() < expected * 2,
            "only {} of {} ticks started runs in {:?}",
            runs.len(),
            options.ticks,
            started.elapsed()
        );
        // Ticks come once a second; reading the runs more often would only load the server.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn collect(http: &reqwest::Client, base: &str, ids: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for id in ids {
        let page: Value = http
            .get(format!("{base}/api/v1/runs"))
            .query(&[("function_id", id.as_str()), ("limit", "1000")])
            .send()
            .await?
            .json()
            .await?;
        if let Some(runs) = page["runs"].as_array() {
            all.extend(runs.iter().cloned());
        }
    }
    Ok(all)
}

fn lateness(run: &Value) -> anyhow::Result<Duration> {
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .context("a run without its tick or creation time")
    };
    let tick = parse(&run["input"]["tick"])?;
    let created = parse(&run["created_at"])?;
    Ok((created - tick).to_std().unwrap_or_default())
}
