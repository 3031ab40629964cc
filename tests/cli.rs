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

/// A graceful stop, as an operator's `kill` sends it.
fn send_sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

both_backends! {
    keys_create => keys_create_recovers_a_lost_admin_key;
    migrate => migrate_applies_the_schema;
    sigterm => serve_stops_cleanly_on_sigterm;
    bench => bench_reports_figures_behind_a_backlog;
}
