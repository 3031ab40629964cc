//! Event → first-step-start latency: emits events one at a time against a real server and
//! measures until a long-polling worker holds the job (when its first step can start).
//!
//! ```sh
//! cargo run --release --example latency -- --db postgres://postgres@127.0.0.1:5432/ironflow_bench --events 500
//! cargo run --release --example latency                    # SQLite in a temp dir
//! ```
//! Prints p50 / p99 / max in milliseconds. The database must be empty or an Ironflow database.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    db: Option<String>,
    events: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        db: None,
        events: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--db" => args.db = it.next(),
            "--events" => {
                args.events = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(args.events)
            }
            other => {
                eprintln!("unknown argument {other}; usage: latency [--db URL] [--events N]");
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
    let (server, db) = common::start_server(args.db.clone(), dir.path(), "latency.db").await?;
    let base = format!("http://{}", server.local_addr);
    let http = reqwest::Client::new();
    let function = format!("latency-probe-{}", uuid::Uuid::new_v4().simple());
    let event = format!("bench.{function}");
    http.post(format!(
        "{base}/ironflow.v1.IronflowService/RegisterFunction"
    ))
    .header("content-type", "application/json")
    .body(json!({"id": function, "triggers": [{"event": event}]}).to_string())
    .send()
    .await?
    .error_for_status()?;
    let worker = format!("latency-worker-{}", uuid::Uuid::new_v4().simple());
    http.post(format!("{base}/api/v1/workers/{worker}/register"))
        .json(&json!({"worker_id": worker, "hostname": "bench", "function_ids": [function], "max_concurrent_jobs": 1}))
        .send()
        .await?
        .error_for_status()?;

    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let poller = {
        let (http, base, worker) = (http.clone(), base.clone(), worker.clone());
        tokio::spawn(async move {
            loop {
                let Ok(response) = http
                    .get(format!(
                        "{base}/api/v1/workers/{worker}/jobs?available=1&wait=20"
                    ))
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() != 200 {
                    continue;
                }
                let at = Instant::now();
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                for job in body["jobs"].as_array().cloned().unwrap_or_default() {
                    let _ = arrived_tx.send(at);
                    let url = format!(
                        "{base}/api/v1/workers/{worker}/jobs/{}",
                        job["job_id"].as_str().unwrap_or_default()
                    );
                    let _ = http
                        .put(url)
                        .json(&json!({"status": "completed", "output": null, "steps": [], "step_offset": 0,
                                      "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]}))
                        .send()
                        .await;
                }
            }
        })
    };

    let mut samples = Vec::with_capacity(args.events);
    for i in 0..args.events {
        let sent = Instant::now();
        http.post(format!("{base}/api/v1/events"))
            .json(&json!({"name": event, "data": {"i": i}}))
            .send()
            .await?
            .error_for_status()?;
        let arrived = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("worker stopped"))?;
        samples.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
    }
    poller.abort();
    samples.sort_by(f64::total_cmp);
    let backend = common::backend_name(&db);
    println!(
        "event -> first step start ({backend}, {} events): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        common::percentile(&samples, 0.50),
        common::percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
    );
    server.shutdown.cancel();
    server.wait().await?;
    Ok(())
}
