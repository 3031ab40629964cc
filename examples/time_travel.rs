//! `GetRunStateAt` latency for a run with a long history: one run is driven through the pull
//! protocol to about `--entries` history entries (one step per checkpoint), then its state is
//! asked at random instants of its life.
//!
//! ```sh
//! cargo run --release --example time_travel -- --db postgres://postgres@127.0.0.1:5432/ironflow_bench
//! cargo run --release --example time_travel                    # SQLite in a temp dir
//! ```
//! Prints p50 / p99 / max in milliseconds. The database must be empty or an Ironflow database.

mod common;

use std::time::Instant;

use rand::Rng;
use serde_json::{Value, json};

struct Args {
    db: Option<String>,
    entries: usize,
    samples: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        db: None,
        entries: 1000,
        samples: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let number =
            |v: Option<String>, default: usize| v.and_then(|n| n.parse().ok()).unwrap_or(default);
        match flag.as_str() {
            "--db" => args.db = it.next(),
            "--entries" => args.entries = number(it.next(), args.entries),
            "--samples" => args.samples = number(it.next(), args.samples),
            other => {
                eprintln!(
                    "unknown argument {other}; usage: time_travel [--db URL] [--entries N] [--samples N]"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let dir = tempfile::tempdir()?;
    let (server, db) = common::start_server(args.db.clone(), dir.path(), "time_travel.db").await?;
    let base = format!("http://{}", server.local_addr);
    let http = reqwest::Client::new();
    let connect = |service: &str, method: &str, body: Value| {
        http.post(format!("{base}/ironflow.v1.{service}/{method}"))
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let function = format!("tt-probe-{}", uuid::Uuid::new_v4().simple());
    connect(
        "IronflowService",
        "RegisterFunction",
        json!({"id": function, "triggers": [{"event": format!("bench.{function}")}]}),
    )
    .send()
    .await?
    .error_for_status()?;
    let worker = format!("tt-worker-{}", uuid::Uuid::new_v4().simple());
    http.post(format!("{base}/api/v1/workers/{worker}/register"))
        .json(&json!({"worker_id": worker, "hostname": "bench", "function_ids": [function], "max_concurrent_jobs": 1}))
        .send()
        .await?
        .error_for_status()?;
    let emitted: Value = http
        .post(format!("{base}/api/v1/events"))
        .json(&json!({"name": format!("bench.{function}"), "data": {"order": 1}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let run = emitted["run_ids"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let jobs: Value = http
        .get(format!(
            "{base}/api/v1/workers/{worker}/jobs?available=1&wait=10"
        ))
        .send()
        .await?
        .json()
        .await?;
    let job = jobs["jobs"][0].clone();
    let report_url = format!(
        "{base}/api/v1/workers/{worker}/jobs/{}",
        job["job_id"].as_str().unwrap_or_default()
    );
    // run.created + run.dispatched + one entry per step + run.completed.
    let steps = args.entries.saturating_sub(3).max(1);
    for i in 0..steps {
        let step = json!({
            "id": format!("{run}:s{i}:0"), "name": format!("s{i}"), "type": "invoke",
            "status": "completed", "output": {"i": i, "payload": "x".repeat(64)},
            "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:00.001Z",
        });
        http.put(&report_url)
            .json(&json!({"status": "progress", "steps": [step], "step_offset": i,
                          "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]}))
            .send()
            .await?
            .error_for_status()?;
    }
    http.put(&report_url)
        .json(&json!({"status": "completed", "output": {"steps": steps}, "steps": [], "step_offset": steps,
                      "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]}))
        .send()
        .await?
        .error_for_status()?;
    let history: Value = http
        .get(format!("{base}/api/v1/runs/{run}/history"))
        .send()
        .await?
        .json()
        .await?;
    let instants: Vec<String> = history["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["recorded_at"].as_str().map(str::to_owned))
        .collect();
    let mut rng = rand::rng();
    let mut samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let at = &instants[rng.random_range(0..instants.len())];
        let started = Instant::now();
        connect(
            "TimeTravelService",
            "GetRunStateAt",
            json!({"run_id": run, "timestamp": at}),
        )
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let backend = common::backend_name(&db);
    println!(
        "GetRunStateAt ({backend}, run with {} history entries, {} samples at random instants): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        instants.len(),
        samples.len(),
        common::percentile(&samples, 0.50),
        common::percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
    server.shutdown.cancel();
    server.wait().await?;
    Ok(())
}
