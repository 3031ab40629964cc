//! `ironflow bench --mode sql-projection`: how fast the server applies a SQL projection (events
//! per second over a backlog of appended events, applied while nothing else runs), and how long
//! an append takes to become visible in the projection while `C` writers keep appending (p50 /
//! p99 from the append's answer to `WaitProjectionCatchup` saying caught up).
//!
//! Everything goes over the real transport (Connect JSON on loopback) to a server in the bench's
//! process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::report::Samples;

#[derive(Debug, Clone)]
pub struct ProjectionBenchOptions {
    pub database_url: String,
    /// Writers appending (each to its own stream).
    pub concurrency: usize,
    /// Events in the backlog the projection applies.
    pub events: usize,
    /// Visibility probes taken under load.
    pub probes: usize,
}

#[derive(Debug, Serialize)]
pub struct ProjectionReport {
    pub backend: &'static str,
    pub events: usize,
    pub apply_secs: f64,
    pub applied_per_sec: f64,
    pub appends_per_sec_under_load: f64,
    pub visible_p50_ms: f64,
    pub visible_p99_ms: f64,
    pub probes: usize,
}

impl ProjectionReport {
    pub fn summary_line(&self) -> String {
        format!(
            "ironflow bench sql-projection [{}] {} appended events applied in {:.2} s: {:.0} events/s; \
             under load ({:.0} appends/s): append -> visible in the projection p50 {:.2} ms p99 {:.2} ms ({} probes)",
            self.backend,
            self.events,
            self.apply_secs,
            self.applied_per_sec,
            self.appends_per_sec_under_load,
            self.visible_p50_ms,
            self.visible_p99_ms,
            self.probes
        )
    }
}

struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    async fn call(&self, service: &str, method: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/ironflow.v1.{service}/{method}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        anyhow::ensure!(
            status == 200,
            "{service}/{method} answered {status}: {text}"
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn append(&self, entity: &str, n: usize) -> anyhow::Result<i64> {
        let body = self
            .call(
                "EntityStreamService",
                "AppendEvent",
                &json!({"entityId": entity, "entityType": "account", "eventName": "bench.deposit",
                        "data": {"account": entity, "amount": 1.5, "n": n}, "expectedVersion": "-1"}),
            )
            .await?;
        body["sequence"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| body["sequence"].as_i64())
            .context("an append answered no sequence")
    }

    async fn wait(&self, name: &str, seq: i64) -> anyhow::Result<bool> {
        let body = self
            .call(
                "ProjectionService",
                "WaitProjectionCatchup",
                &json!({"name": name, "minSeq": seq.to_string(), "timeout": "60s"}),
            )
            .await?;
        Ok(body["caughtUp"].as_bool().unwrap_or(false))
    }
}

pub async fn run(options: ProjectionBenchOptions) -> anyhow::Result<ProjectionReport> {
    anyhow::ensure!(
        options.concurrency > 0 && options.events > 0,
        "--concurrency and --events must be at least 1"
    );
    let backend = if options.database_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let server = super::start_server(&options.database_url, &Default::default()).await?;
    let caller = Arc::new(Caller {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency * 2)
            .build()?,
        base: format!("http://{}", server.local_addr),
    });
    let result = measure(&options, &caller).await;
    server.shutdown.cancel();
    server.wait().await?;
    let m = result?;
    Ok(ProjectionReport {
        backend,
        events: options.events,
        apply_secs: m.apply.as_secs_f64(),
        applied_per_sec: options.events as f64 / m.apply.as_secs_f64(),
        appends_per_sec_under_load: m.load_rate,
        visible_p50_ms: m.visible.percentile_ms(50.0),
        visible_p99_ms: m.visible.percentile_ms(99.0),
        probes: m.visible.len(),
    })
}

struct Measured {
    apply: Duration,
    visible: Samples,
    load_rate: f64,
}

async fn measure(
    options: &ProjectionBenchOptions,
    caller: &Arc<Caller>,
) -> anyhow::Result<Measured> {
    let name = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    caller
        .call(
            "ProjectionService",
            "CreateSQLProjection",
            &json!({
                "name": name,
                "tableSql": "CREATE TABLE balances (account TEXT NOT NULL PRIMARY KEY, balance NUMERIC(14,2) NOT NULL, deposits INTEGER NOT NULL)",
                "eventHandlers": {"bench.deposit": "INSERT INTO balances (account, balance, deposits) VALUES (:data.account, :data.amount, 1) ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance, deposits = balances.deposits + 1"},
            }),
        )
        .await?;
    // The backlog: appended while the projection is paused, then applied with nothing else running.
    caller
        .call(
            "ProjectionService",
            "PauseProjection",
            &json!({"name": name}),
        )
        .await?;
    let per_writer = options.events.div_ceil(options.concurrency);
    let mut tasks = Vec::new();
    for w in 0..options.concurrency {
        let caller = caller.clone();
        let count = per_writer.min(options.events.saturating_sub(w * per_writer));
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for n in 0..count {
                last = caller.append(&format!("acct-{w}"), n).await?;
            }
            Ok::<_, anyhow::Error>(last)
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.context("a writer panicked")??);
    }
    let started = Instant::now();
    caller
        .call(
            "ProjectionService",
            "ResumeProjection",
            &json!({"name": name}),
        )
        .await?;
    while !caller.wait(&name, last).await? {}
    let apply = started.elapsed();

    // Under load: writers keep appending while a prober measures append -> visible.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let load_started = Instant::now();
    for w in 0..options.concurrency.saturating_sub(1).max(1) {
        let (caller, stop) = (caller.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                caller.append(&format!("load-{w}"), n).await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut visible = Samples::default();
    for p in 0..options.probes {
        let sent = Instant::now();
        let seq = caller.append("probe", p).await?;
        anyhow::ensure!(
            caller.wait(&name, seq).await?,
            "the projection did not catch up with a probe"
        );
        visible.push(sent.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut appended = options.probes;
    for w in writers {
        appended += w.await.context("a writer panicked")??;
    }
    let load_rate = appended as f64 / load_started.elapsed().as_secs_f64();
    Ok(Measured {
        apply,
        visible,
        load_rate,
    })
}
