//! What the dashboard reads besides the plain REST lists, on both backends: the overview's
//! queue depth (every function, zeros included), connected workers and schedule-to-start; and
//! the embedded dashboard itself at `/`, which never shadows an API path.

mod common;

use common::{Backend, FakeWorker, TestServer};
use serde_json::{Value, json};

fn depth(overview: &Value, function: &str) -> (i64, i64, i64) {
    let row = overview["queue"]
        .as_array()
        .expect("queue")
        .iter()
        .find(|q| q["function_id"] == function)
        .unwrap_or_else(|| panic!("{function} in {overview}"));
    (
        row["ready"].as_i64().expect("ready"),
        row["scheduled"].as_i64().expect("scheduled"),
        row["leased"].as_i64().expect("leased"),
    )
}

async fn overview_follows_the_queue(backend: Backend) {
    let server = TestServer::start(backend).await;
    for id in ["busy", "idle"] {
        server
            .register_function(json!({"id": id, "triggers": [{"event": format!("{id}.go")}]}))
            .await;
    }
    let before = server.get_json("/api/v1/overview").await;
    assert_eq!(
        depth(&before, "idle"),
        (0, 0, 0),
        "a function with no jobs reports 0"
    );
    assert_eq!(before["workers"], 0);
    assert_eq!(before["schedule_to_start_ms"]["samples"], 0);

    for n in 0..3 {
        server.emit_runs("busy.go", json!({"n": n})).await;
    }
    let queued = server.get_json("/api/v1/overview").await;
    assert_eq!(depth(&queued, "busy"), (3, 0, 0), "{queued}");
    assert_eq!(depth(&queued, "idle"), (0, 0, 0));

    let worker = FakeWorker::register(&server, "w-obs", &["busy"]).await;
    let jobs = worker.poll(1, 1).await;
    assert_eq!(jobs.len(), 1);
    let claimed = server.get_json("/api/v1/overview").await;
    assert_eq!(depth(&claimed, "busy"), (2, 0, 1), "{claimed}");
    assert_eq!(claimed["workers"], 1, "{claimed}");
    let delays = &claimed["schedule_to_start_ms"];
    assert_eq!(delays["samples"], 1, "{claimed}");
    assert!(delays["p50"].as_f64().expect("p50") >= 0.0);
    assert!(delays["p99"].as_f64() >= delays["p50"].as_f64());
    assert_eq!(claimed["open_breakers"], json!([]));
    server.stop().await;
}

both_backends! {
    overview_queue => overview_follows_the_queue;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_at_the_root_without_shadowing_the_api() {
    let server = TestServer::start(Backend::Sqlite).await;
    let index = server
        .get("/")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("GET /");
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let html = index.text().await.expect("html");
    assert!(html.contains("<div id=\"root\">"), "{html}");

    // A client-side route is the same page; the hashed script it names is served for a year.
    let route = server
        .get("/runs/01JRUN")
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET /runs/…");
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.expect("html"), html);
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script in index.html");
    let asset = server.get(script).send().await.expect("GET asset");
    assert_eq!(asset.status(), 200, "{script}");
    assert_eq!(asset.headers()["content-type"], "text/javascript");
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .expect("cache-control")
            .contains("immutable")
    );
    let stale = server
        .get("/assets/index-gone.js")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        stale.status(),
        404,
        "a stale asset name is not answered with the page"
    );

    // A program (no text/html) that mistypes a path gets the API's JSON 404, not the page.
    let typo = server.get("/v1/runs").send().await.expect("GET typo");
    assert_eq!(typo.status(), 404);
    let body: Value = typo.json().await.expect("json error");
    assert_eq!(body["code"], "not_found");

    // The API keeps its own answers: JSON 404s and authentication, not the page.
    let missing = server.get("/api/v1/nope").send().await.expect("GET");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json error");
    assert_eq!(body["code"], "not_found");
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/v1/runs", server.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
    let rpc = reqwest::Client::new()
        .get(format!(
            "{}/ironflow.v1.IronflowService/GetRun",
            server.base
        ))
        .send()
        .await
        .expect("GET rpc");
    assert_ne!(rpc.status(), 200, "an RPC path is never the dashboard");
    server.stop().await;
}
