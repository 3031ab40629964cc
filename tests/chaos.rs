//! Chaos: two `ironflow serve` processes on one Postgres (a throwaway cluster of the test's own,
//! with `synchronous_commit = on`), Rust SDK worker processes, and a driver emitting events with
//! idempotency keys. While the load runs, server and worker processes are killed with SIGKILL
//! and restarted, and the database cluster is crash-restarted (`pg_ctl restart -m immediate`).
//! Then: every acknowledged event is stored exactly once with exactly one run, every run ended,
//! no committed step ran again, and Postgres logged no deadlock.
//!
//! About a minute by default; `IRONFLOW_CHAOS_SECS` sets the chaos phase's length and
//! `scripts/chaos.sh` runs a longer one. The figures are printed as one JSON line (`chaos: {…}`).
//!
//! The workers are this test binary again, entering `chaos_worker_process` (which does nothing
//! unless `IRONFLOW_CHAOS_WORKER` is set).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::eventually;
use ironflow_sdk::{CancellationToken, Ctx, FnError, Function, RetryPolicy, Worker};
use ironflow_testcontainers::{ClusterDurability, PgCluster, RestartMode};
use serde_json::{Value, json};

const WORKER_ENV: &str = "IRONFLOW_CHAOS_WORKER";
const STEPS: [&str; 3] = ["s1", "s2", "s3"];

/// The worker side: serves `chaos` until killed. Each step appends `<run> <step> <nonce>` to
/// the log before it returns the nonce, so an execution is on record whether or not its
/// result was committed.
#[test]
fn chaos_worker_process() {
    let (Ok(url), Ok(key), Ok(log)) = (
        std::env::var(WORKER_ENV),
        std::env::var("IRONFLOW_CHAOS_KEY"),
        std::env::var("IRONFLOW_CHAOS_LOG"),
    ) else {
        return; // an ordinary test run: nothing to do
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let log = PathBuf::from(log);
        let chaos = Function::new("chaos")
            .trigger("chaos.go")
            .retry(RetryPolicy {
                max_attempts: 50,
                initial_delay_ms: 50,
                backoff_factor: 2.0,
                max_delay_ms: 500,
            })
            .handler(move |ctx: Ctx, _input: Value| {
                let log = log.clone();
                async move {
                    let mut nonces = Vec::new();
                    for step in STEPS {
                        let (log, run) = (log.clone(), ctx.run_id().to_owned());
                        let nonce: String = ctx
                            .run(step, || async move {
                                let nonce = uuid::Uuid::new_v4().simple().to_string();
                                append(&log, &format!("{run} {step} {nonce}"));
                                Ok(nonce)
                            })
                            .await?;
                        nonces.push(nonce);
                    }
                    Ok::<_, FnError>(nonces)
                }
            });
        let worker = Worker::builder(url, key)
            .concurrency(8)
            .function(chaos)
            .build()
            .expect("worker builds");
        let _ = worker.run(CancellationToken::new()).await;
    });
}

/// Appends one line with a single `write` (O_APPEND): lines from concurrent steps and
/// processes never interleave, and a line written survives a SIGKILL right after.
fn append(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log opens");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("log written");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `ironflow serve` process, restartable on the same port.
struct Node {
    port: u16,
    db_url: String,
    key_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(db_url: &str, dir: &Path, n: usize) -> Self {
        Self {
            port: free_port(),
            db_url: db_url.to_owned(),
            key_file: dir.join("admin.key"),
            log: dir.join(format!("node{n}.log")),
            child: None,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_ironflow"))
            .args(["serve", "--bind", "127.0.0.1", "--lease-ttl-secs", "2"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--db")
            .arg(&self.db_url)
            .arg("--bootstrap-key-file")
            .arg(&self.key_file)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ironflow serve starts");
        self.child = Some(child);
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let url = format!("{}/ready", self.base());
        eventually("a node is ready", Duration::from_secs(60), || async {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        })
        .await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One SDK worker process attached to one node.
struct WorkerProcess {
    base: String,
    key: String,
    log: PathBuf,
    child: Option<Child>,
}

impl WorkerProcess {
    fn start(&mut self) {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "chaos_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, &self.base)
            .env("IRONFLOW_CHAOS_KEY", &self.key)
            .env("IRONFLOW_CHAOS_LOG", &self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker process starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Figures {
    server_kills: AtomicU64,
    worker_kills: AtomicU64,
    db_restarts: AtomicU64,
    emit_retries: AtomicU64,
}

/// Emits `chaos.go` events with keys `chaos-<n>` to the nodes in turn, each retried (same
/// key, any node) until one answers 200; returns the acknowledged keys.
async fn emit_until_stopped(
    bases: Vec<String>,
    key: String,
    first: u64,
    stride: u64,
    stop: Arc<AtomicBool>,
    figures: Arc<Figures>,
) -> Vec<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut acked = Vec::new();
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        let idempotency_key = format!("chaos-{n}");
        let mut attempt = 0usize;
        loop {
            let base = &bases[(n as usize + attempt) % bases.len()];
            let answer = http
                .post(format!("{base}/api/v1/events"))
                .bearer_auth(&key)
                .json(&json!({"name": "chaos.go", "data": {"n": n}, "idempotency_key": idempotency_key}))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().as_u16() == 200 => break,
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    assert!(
                        status == 503 || status == 502,
                        "an emit answered {status}: {body}"
                    );
                    if status == 503 {
                        assert_eq!(body["retryable"], true, "{body}");
                    }
                }
                Err(_) => {} // the node is down
            }
            attempt += 1;
            figures.emit_retries.fetch_add(1, Ordering::Relaxed);
            // Paces retries against a node that is down; correctness does not depend on it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.push(idempotency_key);
        n += stride;
        // About 40 events per second over all emitters.
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_servers_workers_and_the_database() {
    let chaos_secs: u64 = std::env::var("IRONFLOW_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let started = Instant::now();
    let cluster = PgCluster::start(ClusterDurability::Durable)
        .await
        .expect("a Postgres cluster of the test's own");
    let db = cluster.database().await.expect("a database");
    let dir = tempfile::tempdir().expect("temp dir");
    let step_log = dir.path().join("steps.log");
    let http = reqwest::Client::new();

    let mut nodes: Vec<Node> = (0..2).map(|n| Node::new(db.url(), dir.path(), n)).collect();
    // The first node bootstraps the database (and writes the key); then the second starts.
    nodes[0].start();
    nodes[0].wait_ready(&http).await;
    nodes[1].start();
    nodes[1].wait_ready(&http).await;
    let key = std::fs::read_to_string(&nodes[0].key_file)
        .expect("bootstrap key")
        .trim()
        .to_owned();
    let mut workers: Vec<WorkerProcess> = (0..2)
        .map(|w| WorkerProcess {
            base: nodes[w % nodes.len()].base(),
            key: key.clone(),
            log: step_log.clone(),
            child: None,
        })
        .collect();
    for w in &mut workers {
        w.start();
    }
    // The workers register `chaos` when they connect.
    let function = format!("{}/api/v1/functions/chaos", nodes[0].base());
    eventually(
        "the workers registered",
        Duration::from_secs(60),
        || async {
            let r = http.get(&function).bearer_auth(&key).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;

    let figures = Arc::new(Figures::default());
    let stop = Arc::new(AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(Node::base).collect();
    let emitters: Vec<_> = (0..3)
        .map(|e| {
            tokio::spawn(emit_until_stopped(
                bases.clone(),
                key.clone(),
                e,
                3,
                stop.clone(),
                figures.clone(),
            ))
        })
        .collect();

    // The chaos: every 1.5 s one process is killed with SIGKILL and restarted, in turn a server
    // node and a worker; twice the database cluster is crash-restarted.
    let chaos_started = Instant::now();
    let restarts_at = [chaos_secs / 3, 2 * chaos_secs / 3];
    let mut restarted = 0;
    let mut round = 0usize;
    while chaos_started.elapsed() < Duration::from_secs(chaos_secs) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        round += 1;
        if restarted < restarts_at.len()
            && chaos_started.elapsed() >= Duration::from_secs(restarts_at[restarted])
        {
            cluster
                .restart(RestartMode::Immediate)
                .await
                .expect("the cluster restarts");
            figures.db_restarts.fetch_add(1, Ordering::Relaxed);
            restarted += 1;
            continue;
        }
        if round.is_multiple_of(2) {
            let node = &mut nodes[(round / 2) % 2];
            node.kill();
            figures.server_kills.fetch_add(1, Ordering::Relaxed);
            node.start();
            node.wait_ready(&http).await;
        } else {
            let worker = &mut workers[(round / 2) % 2];
            worker.kill();
            figures.worker_kills.fetch_add(1, Ordering::Relaxed);
            worker.start();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<String> = Vec::new();
    for e in emitters {
        acked.extend(e.await.expect("emitter"));
    }

    // Settle: every run ends.
    let pool = common::pg_pool(db.url()).await.expect("connect");
    let unfinished = || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')",
            )
            .fetch_one(&pool)
            .await
            .expect("count");
            (n == 0).then_some(())
        }
    };
    eventually("every run ends", Duration::from_secs(240), unfinished).await;

    // Every acknowledged event stored, once, with one run.
    let stored: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT e.idempotency_key, count(r.id) FROM events e LEFT JOIN runs r ON r.event_id = e.id \
         WHERE e.name = 'chaos.go' GROUP BY e.id, e.idempotency_key",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    let stored_keys: HashMap<String, i64> = stored
        .into_iter()
        .filter_map(|(k, runs)| k.map(|k| (k, runs)))
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !stored_keys.contains_key(*k))
        .collect();
    let not_one_run: Vec<(&String, &i64)> = stored_keys.iter().filter(|(_, n)| **n != 1).collect();
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
            .fetch_all(&pool)
            .await
            .expect("statuses");

    // No committed step executed again: after the execution whose nonce was committed, the
    // log holds no other execution of that step.
    let committed: Vec<(String, String, Option<sqlx::types::Json<Value>>)> = sqlx::query_as(
        "SELECT run_id, name, output FROM steps WHERE status = 'completed' AND name IN ('s1', 's2', 's3')",
    )
    .fetch_all(&pool)
    .await
    .expect("steps");
    let log = std::fs::read_to_string(&step_log).unwrap_or_default();
    let lines: Vec<(&str, &str, &str)> = log
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    let position: HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, (_, _, nonce))| (*nonce, i))
        .collect();
    let mut executions: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, (run, step, _)) in lines.iter().enumerate() {
        executions.entry((run, step)).or_default().push(i);
    }
    let mut reexecuted = 0usize;
    let mut unlogged = 0usize;
    for (run, step, output) in &committed {
        let Some(nonce) = output.as_ref().and_then(|o| o.0.as_str()) else {
            unlogged += 1;
            continue;
        };
        let Some(&at) = position.get(nonce) else {
            unlogged += 1;
            continue;
        };
        reexecuted += executions
            .get(&(run.as_str(), step.as_str()))
            .map_or(0, |runs| runs.iter().filter(|i| **i > at).count());
    }
    let executions_total = lines.len();
    let deadlocks = std::fs::read_to_string(cluster.log_path())
        .unwrap_or_default()
        .matches("deadlock detected")
        .count();

    let summary = json!({
        "chaos_secs": chaos_secs,
        "total_secs": started.elapsed().as_secs(),
        "server_kills": figures.server_kills.load(Ordering::Relaxed),
        "worker_kills": figures.worker_kills.load(Ordering::Relaxed),
        "db_restarts": figures.db_restarts.load(Ordering::Relaxed),
        "events_acknowledged": acked.len(),
        "emit_retries": figures.emit_retries.load(Ordering::Relaxed),
        "runs": statuses.iter().map(|(s, n)| (s.clone(), *n)).collect::<HashMap<_, _>>(),
        "step_executions": executions_total,
        "committed_steps": committed.len(),
        "lost_events": lost.len(),
        "events_without_exactly_one_run": not_one_run.len(),
        "reexecuted_after_commit": reexecuted,
        "committed_without_log_line": unlogged,
        "deadlocks": deadlocks,
    });
    println!("chaos: {summary}");
    let distinct: HashSet<&String> = acked.iter().collect();
    assert_eq!(distinct.len(), acked.len(), "keys are unique");
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    assert!(
        not_one_run.is_empty(),
        "events without exactly one run: {not_one_run:?}"
    );
    assert_eq!(reexecuted, 0, "committed steps executed again: {summary}");
    assert_eq!(
        unlogged, 0,
        "committed outputs that no execution logged: {summary}"
    );
    assert_eq!(deadlocks, 0, "Postgres detected deadlocks: {summary}");
    let runs: i64 = statuses.iter().map(|(_, n)| n).sum();
    assert_eq!(
        runs as usize,
        acked.len(),
        "one run per acknowledged event: {summary}"
    );
    assert!(
        figures.server_kills.load(Ordering::Relaxed) > 0
            && figures.worker_kills.load(Ordering::Relaxed) > 0
    );
    drop(workers);
    drop(nodes);
    pool.close().await;
}
