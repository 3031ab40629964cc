//! The `ironflow` binary as a user runs it: `migrate` alone, `keys create` recovering a lost
//! admin key, `serve` shutting down gracefully on SIGTERM, and `bench` (its worker in its own process, a seeded backlog), on both backends.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, fresh_database, raw_count};

fn ironflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ironflow"))
}

async fn migrate_applies_the_schema(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let status = ironflow()
        .args(["migrate", "--db", &url])
        .status()
        .expect("runs");
    assert!(status.success());
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM ironflow_runs").await,
        0,
        "views exist"
    );
    let again = ironflow()
        .args(["migrate", "--db", &url])
        .status()
        .expect("runs");
    assert!(again.success(), "migrating twice is a no-op");
    assert_eq!(
        raw_count(&url, "SELECT COUNT(*) FROM orgs").await,
        0,
        "migrate does not bootstrap"
    );
}

async fn serve_stops_cleanly_on_sigterm(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let mut child = ironflow()
        .args(["serve", "--db", &url, "--port", &port.to_string()])
        .arg("--bootstrap-key-file")
        .arg(&key_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    common::eventually(
        "the server becomes ready",
        Duration::from_secs(20),
        || async {
            let ready = client
                .get(format!("http://127.0.0.1:{port}/ready"))
                .send()
                .await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;
    let key = std::fs::read_to_string(&key_file)
        .expect("key file")
        .trim()
        .to_owned();
    let emitted = client
        .post(format!("http://127.0.0.1:{port}/api/v1/events"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "before.stop"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(emitted.status(), 200);
    send_sigterm(&child);
    let status = common::eventually(
        "the server stops after SIGTERM",
        Duration::from_secs(10),
        || std::future::ready(child.try_wait().expect("wait")),
    )
    .await;
    assert!(status.success(), "graceful exit: {status}");
    assert_eq!(
        raw_count(
            &url,
            "SELECT COUNT(*) FROM events WHERE name = 'before.stop'"
        )
        .await,
        1
    );
}

/// A small bench on a scratch database: every workflow finishes through the worker process,
/// the figures and counters are reported, and the backlog it seeded is queued behind them,
/// untouched (its function has no worker).
async fn bench_reports_figures_behind_a_backlog(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let out = ironflow()
        .args(["bench", "--db", &url, "--workflows", "6", "--steps", "3"])
        .args([
            "--concurrency",
            "4",
            "--latency-samples",
            "3",
            "--raw-secs",
            "1",
        ])
        .args(["--backlog", "120", "--backlog-history", "500", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("runs");
    assert!(out.status.success(), "bench failed: {}", out.status);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(last).expect("JSON figures");
    assert_eq!(report["worker"], "own process");
    assert_eq!(report["workflows"], 6);
    assert_eq!(report["backlog_runs"], 120);
    assert!(report["steps_per_sec"].as_f64().expect("steps/s") > 0.0);
    assert!(report["event_to_start_p50_ms"].as_f64().expect("latency") > 0.0);
    // Each durable step costs the server at least one statement; a commit per step at most
    // once checkpoints are group-committed, but never none.
    assert!(report["statements_per_step"].as_f64().expect("statements") >= 1.0);
    assert!(report["commits_per_step"].as_f64().expect("commits") > 0.0);
    assert!(
        report["cpu"]["worker_us"].as_f64().expect("worker CPU") >= 0.0,
        "the worker process's CPU is read: {report}"
    );
    assert!(stdout.contains("statements and"), "counters line: {stdout}");
    let backlog = "SELECT COUNT(*) FROM jobs j JOIN runs r ON r.id = j.run_id \
                   WHERE r.function_id LIKE 'bench-%-backlog' AND j.state = 'queued'";
    assert_eq!(raw_count(&url, backlog).await, 120, "the backlog is queued");
    let history = "SELECT COUNT(*) FROM history WHERE function_id LIKE 'bench-%-backlog'";
    assert!(
        raw_count(&url, history).await >= 500,
        "its history is seeded"
    );
    let measured = "SELECT COUNT(*) FROM runs WHERE function_id LIKE 'bench-%-steps' \
                    AND status = 'completed'";
    assert_eq!(raw_count(&url, measured).await, 6);
}

/// A lost admin key is recovered on the database directly, and a second boot with
/// `--bootstrap-key-file` says why it wrote nothing and what to run instead.
async fn keys_create_recovers_a_lost_admin_key(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let before = ironflow()
        .args(["keys", "create", "--role", "admin", "--db", &url])
        .output()
        .expect("runs");
    assert!(
        !before.status.success(),
        "nothing to mint a key in before the first boot"
    );
    assert!(String::from_utf8_lossy(&before.stderr).contains("ironflow serve"));

    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let serve = |stderr: Stdio| {
        ironflow()
            .args(["serve", "--db", &url, "--port", &port.to_string()])
            .arg("--bootstrap-key-file")
            .arg(&key_file)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn")
    };
    let mut first = serve(Stdio::null());
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = || async {
        let r = client.get(format!("{base}/ready")).send().await;
        r.is_ok_and(|r| r.status() == 200).then_some(())
    };
    common::eventually("the server becomes ready", Duration::from_secs(20), ready).await;
    let original = std::fs::read_to_string(&key_file).expect("key written");
    std::fs::remove_file(&key_file).expect("the operator loses the key");
    first.kill().expect("stopped");
    first.wait().expect("reaped");

    let out = ironflow()
        .args([
            "keys",
            "create",
            "--role",
            "admin",
            "--name",
            "recovered",
            "--db",
            &url,
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    assert!(minted.starts_with("ifkey_") && minted != original.trim());

    let second = serve(Stdio::piped());
    common::eventually(
        "the server becomes ready again",
        Duration::from_secs(20),
        ready,
    )
    .await;
    let projects = client
        .get(format!("{base}/api/v1/apikeys"))
        .bearer_auth(&minted)
        .send()
        .await
        .expect("sent");
    assert_eq!(projects.status(), 200, "the recovered key is an admin key");
    let keys: serde_json::Value = projects.json().await.expect("json");
    assert!(
        keys.as_array()
            .is_some_and(|k| k.iter().any(|k| k["name"] == "recovered"))
    );
    assert!(!key_file.exists(), "a second boot writes no key file");
    send_sigterm(&second);
    let output = second.wait_with_output().expect("stopped");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("already has an organisation") && said.contains("ironflow keys create"),
        "{said}"
    );
}

/// SIGTERM, then wait until the server has exited.
fn stop(mut child: std::process::Child) {
    send_sigterm(&child);
    child.wait().expect("stopped");
}

/// A graceful stop, as an operator's `kill` sends it.
fn send_sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// A binary refuses a database migrated by a newer one, saying which version it found.
async fn a_newer_schema_is_refused(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    assert!(
        ironflow()
            .args(["migrate", "--db", &url])
            .status()
            .expect("runs")
            .success()
    );
    let checksum = match backend {
        Backend::Postgres => "'\\x00'::bytea",
        Backend::Sqlite => "X'00'",
    };
    common::raw_execute(
        &url,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from the future', true, {checksum}, 0)"
        ),
    )
    .await
    .expect("a newer release's migration recorded");
    let out = ironflow()
        .args(["migrate", "--db", &url])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("99990101000000") && said.contains("newer than this binary"),
        "{said}"
    );
}

/// A server on a free port with these extra arguments; its stderr goes to `log` (a file: not a
/// terminal, and never a full pipe that would block the server).
fn serve_with(
    url: &str,
    port: u16,
    key_file: &std::path::Path,
    extra: &[&str],
    log: &std::path::Path,
) -> std::process::Child {
    ironflow()
        .args(["serve", "--db", url, "--port", &port.to_string()])
        .arg("--bootstrap-key-file")
        .arg(key_file)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    common::eventually(
        "the server becomes ready",
        Duration::from_secs(20),
        || async {
            let r = client.get(format!("{base}/ready")).send().await;
            r.is_ok_and(|r| r.status() == 200).then_some(())
        },
    )
    .await;
}

/// `--log-format json`: one JSON object per log line, each line of a request carrying its id
/// (the client's `x-request-id`, echoed back); text logs into a pipe have no colour codes.
async fn logs_are_json_or_plain_text(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("json.log");
    let child = serve_with(
        &url,
        port,
        &key_file,
        &[
            "--log-format",
            "json",
            "--log-level",
            "ironflow=debug,tower_http=debug",
        ],
        &log,
    );
    wait_ready(&base).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/events"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let fresh = reqwest::get(format!("{base}/health")).await.expect("sent");
    assert!(
        fresh
            .headers()
            .get("x-request-id")
            .is_some_and(|v| v.len() >= 32),
        "a new id"
    );
    stop(child);
    let stderr = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["id"] == "req-42" && l["span"]["path"] == "/api/v1/events"),
        "the request's lines carry its id: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "no escape codes");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("text.log");
    let child = serve_with(
        &url,
        port,
        &key_file,
        &["--log-level", "ironflow=debug,tower_http=debug"],
        &log,
    );
    wait_ready(&base).await;
    reqwest::get(format!("{base}/health")).await.expect("sent");
    stop(child);
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(
        stderr.contains("request{id="),
        "text lines name the request: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes into a pipe: {stderr}"
    );
}

/// `ironflow backup` under load: the copy opens and holds every run
/// acknowledged before the backup started. Postgres points at `pg_dump`.
async fn backup_is_consistent_under_load(backend: Backend) {
    let (url, _guard) = fresh_database(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("copy.db");
    if backend == Backend::Postgres {
        let out = ironflow()
            .args(["backup", "--db", &url])
            .arg(&copy)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
        return;
    }
    let key_file = dir.path().join("key");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = serve_with(&url, port, &key_file, &[], &dir.path().join("serve.log"));
    wait_ready(&base).await;
    let key = std::fs::read_to_string(&key_file)
        .expect("key")
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let registered = http
        .post(format!(
            "{base}/ironflow.v1.IronflowService/RegisterFunction"
        ))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(r#"{"id": "backed-up", "triggers": [{"event": "b.go"}]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(registered.status(), 200);
    let emit = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        move |n: usize| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let r = http
                    .post(format!("{base}/api/v1/events"))
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"name": "b.go", "data": {"n": n}}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 200);
                let body: serde_json::Value = r.json().await.expect("json");
                body["run_ids"].as_array().map_or(0, Vec::len)
            }
        }
    };
    let mut acknowledged = 0;
    for n in 0..50 {
        acknowledged += emit(n).await;
    }
    assert_eq!(acknowledged, 50);
    // Load while the copy is taken.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (done, emit) = (done.clone(), emit.clone());
        tokio::spawn(async move {
            let mut n = 1000;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                emit(n).await;
                n += 1;
            }
            n - 1000
        })
    };
    let out = ironflow()
        .args(["backup", "--db", &url])
        .arg(&copy)
        .output()
        .expect("runs");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = load.await.expect("load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        during > 0,
        "the server took writes while the copy was taken"
    );
    let copy_url = copy.display().to_string();
    assert_eq!(
        raw_count(&copy_url, "SELECT COUNT(*) FROM runs WHERE event_id IN (SELECT id FROM events WHERE json_extract(data, '$.n') < 1000)").await,
        50,
        "every run acknowledged before the backup is in the copy"
    );
    let again = ironflow()
        .args(["backup", "--db", &url])
        .arg(&copy)
        .output()
        .expect("runs");
    assert!(
        !again.status.success(),
        "an existing file is not overwritten"
    );
    stop(child);
}

both_backends! {
    newer_schema => a_newer_schema_is_refused;
    log_format => logs_are_json_or_plain_text;
    backup => backup_is_consistent_under_load;
    keys_create => keys_create_recovers_a_lost_admin_key;
    migrate => migrate_applies_the_schema;
    sigterm => serve_stops_cleanly_on_sigterm;
    bench => bench_reports_figures_behind_a_backlog;
}
