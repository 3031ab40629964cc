//! The `ironflow` binary as a user runs it: `migrate` alone, and `serve` shutting down
//! gracefully on SIGTERM, on both backends.

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
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
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

both_backends! {
    migrate => migrate_applies_the_schema;
    sigterm => serve_stops_cleanly_on_sigterm;
}
