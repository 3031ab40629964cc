//! Regression tests for the defects of the hardening issue, each on both backends: CEL
//! expressions that used to overflow the stack, U+0000 in any input, lease expiry as a failed
//! attempt, job routes that did not check who calls, non-JSON error bodies, and the small ones.

mod common;

use std::time::Duration;

use common::ws::{connect, next_frame, send};
use common::{
    Backend, FakeWorker, ServerConfig, TestServer, eventually, foreign_project_key, raw_execute,
    step_entry, table_counts,
};
use serde_json::{Value, json};

/// The expression from the issue: 2 000 terms, 4 003 characters, under the length limit.
fn cel_bomb() -> String {
    format!("{} > 0", vec!["1"; 2000].join("+"))
}

fn message(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_owned()
}

async fn cel_bombs_are_refused_when_accepted(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bomb = cel_bomb();

    let (status, body) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": "bomb", "triggers": [{"event": ">", "expression": bomb}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument");
    assert!(message(&body).contains("triggers[0]"), "{body}");
    assert!(message(&body).contains("the limit is 32"), "{body}");

    let (status, body) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": "lanes", "triggers": [{"event": "x"}],
                   "concurrency": {"limit": 1, "key": bomb}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("concurrency.key"), "{body}");

    let (status, body) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "g", "pattern": ">", "filterExpr": bomb}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("filter_expr"), "{body}");

    let mut socket = connect(&server).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "subscription": {"pattern": ">", "options": {"filter": bomb}}}),
    )
    .await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "subscription_result", "{frame}");
    assert_eq!(frame["success"], false, "{frame}");
    assert!(
        frame["error"]
            .as_str()
            .unwrap_or_default()
            .contains("filter"),
        "{frame}"
    );

    // Nothing was stored, and the events that used to abort the process are served.
    let functions = server.get_json("/api/v1/functions").await;
    assert_eq!(
        functions["functions"].as_array().map(Vec::len),
        Some(0),
        "{functions}"
    );
    let (status, body) = server.emit_json(&json!({"name": "any", "data": {}})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .pubsub_json("Publish", json!({"topic": "t", "data": {}}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A definition stored before the limits existed (written here with SQL) never matches and
/// never takes the server down: emits and publishes go on, other functions still trigger.
async fn a_stored_bomb_never_matches(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(
            json!({"id": "old", "triggers": [{"event": ">", "expression": "data.x > 0"}]}),
        )
        .await;
    server
        .register_function(json!({"id": "fine", "triggers": [{"event": "go"}]}))
        .await;
    let (status, body) = server
        .pubsub_json(
            "CreateConsumerGroup",
            json!({"name": "g", "pattern": ">", "filterExpr": "data.x > 0"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bomb = cel_bomb();
    let functions = match backend {
        Backend::Postgres => format!(
            "UPDATE functions SET definition = jsonb_set(definition, '{{triggers,0,expression}}', to_jsonb('{bomb}'::text)) WHERE id = 'old'"
        ),
        Backend::Sqlite => format!(
            "UPDATE functions SET definition = json_set(definition, '$.triggers[0].expression', '{bomb}') WHERE id = 'old'"
        ),
    };
    let groups = format!("UPDATE consumer_groups SET filter_expr = '{bomb}'");
    assert_eq!(raw_execute(&server.url, &functions).await, Ok(1));
    raw_execute(&server.url, &groups)
        .await
        .expect("group updated");

    for _ in 0..3 {
        let (status, body) = server
            .emit_json(&json!({"name": "go", "data": {"x": 1}}))
            .await;
        assert_eq!(status, 200, "{body}");
        let runs: Vec<&str> = body["run_ids"]
            .as_array()
            .expect("run_ids")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(runs.len(), 1, "only 'fine' runs: {body}");
        let (status, body) = server
            .pubsub_json("Publish", json!({"topic": "go", "data": {"x": 1}}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let health = server.get("/health").send().await.expect("alive");
    assert_eq!(health.status(), 200);
}

fn assert_names_nul(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_argument", "{body}");
    let text = message(body);
    assert!(text.contains(field), "{body} should name {field}");
    assert!(text.contains("U+0000"), "{body} should say U+0000");
}

/// Defect 2: U+0000 anywhere is refused with a 400 naming where it was, on both backends, and
/// nothing is written (Postgres used to answer 500, SQLite to store it).
async fn nul_is_refused_everywhere(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "nul", "triggers": [{"event": "n.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-nul", &["nul"]).await;
    let before = table_counts(&server.url).await;

    for (body, field) in [
        (json!({"name": "a", "data": {"s": "x\u{0}y"}}), "data.s"),
        (json!({"name": "a\u{0}", "data": {}}), "name"),
        (
            json!({"name": "a", "data": {}, "idempotency_key": "k\u{0}"}),
            "idempotency_key",
        ),
        (
            json!({"name": "a", "data": {}, "source": "s\u{0}"}),
            "source",
        ),
        (json!({"name": "a", "data": {"k\u{0}": 1}}), "data.k"),
    ] {
        let (status, answer) = server.emit_json(&body).await;
        assert_names_nul(status, &answer, field);
    }
    for query in ["search=%00", "name=a%00b", "source=%00"] {
        let response = server
            .get(&format!("/api/v1/events?{query}"))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON error");
        assert_names_nul(status, &body, "query parameter");
    }
    for path in [
        "/api/v1/secrets/a%00b",
        "/api/v1/runs/r%00",
        "/api/v1/events/e%00",
        "/api/v1/workers/w%00/jobs",
    ] {
        let response = server.get(path).send().await.expect("sent");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON error");
        assert_names_nul(status, &body, "path parameter");
    }
    let response = server
        .post("/api/v1/workers/w%00/register")
        .json(&json!({"hostname": "h"}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    assert_names_nul(
        status,
        &response.json().await.expect("JSON"),
        "path parameter",
    );
    let response = server
        .post("/api/v1/workers/w2/register")
        .json(&json!({"hostname": "h\u{0}", "function_ids": ["nul"]}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    assert_names_nul(status, &response.json().await.expect("JSON"), "hostname");
    let (status, body) = server
        .pubsub_json("Publish", json!({"topic": "t\u{0}", "data": {}}))
        .await;
    assert_names_nul(status, &body, "topic");
    let (status, body) = server
        .connect_json(
            "Emit",
            json!({"event": "e", "data": {"deep": [{"x": "\u{0}"}]}}),
        )
        .await;
    assert_names_nul(status, &body, "data.deep[0].x");
    // The binary codec is checked too.
    let message = ironflow::proto::v1::PublishRequest {
        topic: "t\u{0}".into(),
        ..Default::default()
    };
    let response = server
        .post("/ironflow.v1.PubSubService/Publish")
        .header("content-type", "application/proto")
        .body(prost::Message::encode_to_vec(&message))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    assert_names_nul(status, &response.json().await.expect("JSON"), "topic");
    let mut socket = connect(&server).await;
    send(
        &mut socket,
        json!({"type": "subscribe", "subscription": {"pattern": "a\u{0}"}}),
    )
    .await;
    let frame = next_frame(&mut socket).await;
    assert!(frame.to_string().contains("U+0000"), "{frame}");

    // A step output with U+0000: the report is refused and names it; nothing of it is stored.
    let run_id = server.emit_runs("n.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    assert_eq!(worker.ack(&job).await, 200);
    let steps_before = table_counts(&server.url).await;
    let (status, body) = worker
        .report(
            &job,
            json!({"status": "progress", "steps": [step_entry(&run_id, "a", json!({"v": "a\u{0}b"}))]}),
        )
        .await;
    assert_names_nul(status, &body, "steps[0].output.v");
    let (status, body) = worker
        .report(&job, json!({"status": "completed", "output": "\u{0}"}))
        .await;
    assert_names_nul(status, &body, "output");
    assert_eq!(table_counts(&server.url).await, steps_before);
    let (status, _) = worker
        .report(&job, json!({"status": "completed", "output": "fine"}))
        .await;
    assert_eq!(
        status, 200,
        "the same dispatch can still report a storable result"
    );

    // Nothing of the refused requests was written.
    let mut after = table_counts(&server.url).await;
    for table in ["events", "runs", "history", "steps", "jobs"] {
        after.remove(table);
    }
    let mut expected = before;
    for table in ["events", "runs", "history", "steps", "jobs"] {
        expected.remove(table);
    }
    assert_eq!(after, expected);
    server.stop().await;
}

/// Defect 3: a dispatch whose lease expired is a failed attempt (`LEASE_EXPIRED`) under the
/// function's retry policy, so a job that is never reported does not come back forever.
async fn lease_expiry_uses_an_attempt(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            lease_ttl: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    )
    .await;
    server
        .register_function(json!({"id": "poison", "triggers": [{"event": "p.go"}],
            "retry": {"maxAttempts": 2, "initialDelayMs": 100, "backoffFactor": 2}}))
        .await;
    let worker = FakeWorker::register(&server, "w-crash", &["poison"]).await;
    let run_id = server.emit_runs("p.go", json!({})).await.remove(0);
    let first = worker.next_job().await;
    assert_eq!(first["attempt"], 1);
    assert_eq!(worker.ack(&first).await, 200);
    // The worker "crashes": no report, no heartbeat. The lease expires and the run comes
    // back as attempt 2.
    let second = worker.next_job().await;
    assert_eq!(second["run_id"], run_id.as_str());
    assert_eq!(second["attempt"], 2);
    let run = server.run_json(&run_id).await;
    assert_eq!(run["error"]["code"], "LEASE_EXPIRED", "{run}");
    let (status, _) = worker
        .report(&first, json!({"status": "completed", "output": "late"}))
        .await;
    assert_eq!(status, 409, "the expired dispatch is fenced off");
    // The last attempt's lease expires too: the run fails instead of looping.
    let failed = eventually(
        "the run fails after its last attempt",
        Duration::from_secs(30),
        || async {
            let run = server.run_json(&run_id).await;
            (run["status"] == "failed").then_some(run)
        },
    )
    .await;
    assert_eq!(failed["attempt"], 2);
    assert_eq!(failed["error"]["code"], "LEASE_EXPIRED");
    let history: Value = server
        .get_json(&format!("/api/v1/runs/{run_id}/history"))
        .await;
    let retrying: Vec<&Value> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["kind"] == "run.retrying")
        .collect();
    assert_eq!(retrying.len(), 1, "{history}");
    assert_eq!(retrying[0]["payload"]["error"]["code"], "LEASE_EXPIRED");
    assert!(
        worker.poll(1, 0).await.is_empty(),
        "a failed run is not dispatched again"
    );
    server.stop().await;
}

/// Defect 6: acks and reports are accepted only from the environment and the worker the job
/// was leased to; a key of another project cannot complete our run.
async fn job_routes_check_the_caller(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "owned", "triggers": [{"event": "o.go"}]}))
        .await;
    let owner = FakeWorker::register(&server, "w-owner", &["owned"]).await;
    let run_id = server.emit_runs("o.go", json!({})).await.remove(0);
    let job = owner.next_job().await;

    let foreign_key = foreign_project_key(&server).await;
    let intruder = FakeWorker {
        base: server.base.clone(),
        key: foreign_key,
        id: "evil".into(),
        http: reqwest::Client::new(),
    };
    let same_env_other_worker = FakeWorker {
        base: server.base.clone(),
        key: server.key.clone(),
        id: "w-other".into(),
        http: reqwest::Client::new(),
    };
    let owner_as_evil = FakeWorker {
        id: "w-owner".into(),
        ..FakeWorker {
            base: server.base.clone(),
            key: intruder.key.clone(),
            id: String::new(),
            http: reqwest::Client::new(),
        }
    };
    let before = table_counts(&server.url).await;
    for caller in [&intruder, &same_env_other_worker, &owner_as_evil] {
        assert_eq!(caller.ack(&job).await, 409, "ack by {}", caller.id);
        for outcome in [
            json!({"status": "completed", "output": "stolen"}),
            json!({"status": "progress", "steps": [step_entry(&run_id, "x", json!(1))]}),
            json!({"status": "failed", "error": {"message": "no", "retryable": false}}),
        ] {
            let (status, body) = caller.report(&job, outcome).await;
            assert_eq!(status, 409, "report by {}: {body}", caller.id);
            assert_eq!(body["error"], "STALE_EXECUTION");
        }
    }
    assert_eq!(
        table_counts(&server.url).await,
        before,
        "nothing was written"
    );
    assert_eq!(server.run_json(&run_id).await["status"], "running");
    assert_eq!(owner.ack(&job).await, 200);
    let (status, _) = owner
        .report(&job, json!({"status": "completed", "output": "mine"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.run_json(&run_id).await["output"], "mine");
    server.stop().await;
}

async fn send_raw(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.text().await.unwrap_or_default(),
    )
}

fn assert_json_error(
    what: &str,
    (status, content_type, body): (u16, String, String),
    expected: u16,
) {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content type {content_type}, body {body}"
    );
    let body: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    assert!(
        body["code"].is_string() && body["message"].is_string(),
        "{what}: {body}"
    );
}

/// Defect 7: every error answer is the documented JSON body, axum's own rejections too.
async fn every_error_is_json(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            max_payload_bytes: 1024,
            ..ServerConfig::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.base);
    assert_json_error(
        "wrong method",
        send_raw(http.delete(url("/api/v1/events")).bearer_auth(&server.key)).await,
        405,
    );
    assert_json_error(
        "wrong method on a Connect route",
        send_raw(
            http.get(url("/ironflow.v1.IronflowService/GetRun"))
                .bearer_auth(&server.key),
        )
        .await,
        405,
    );
    assert_json_error(
        "wrong method without a key",
        send_raw(http.patch(url("/health"))).await,
        405,
    );
    assert_json_error(
        "invalid UTF-8 in a path id",
        send_raw(
            http.get(url("/api/v1/runs/%FF%FE"))
                .bearer_auth(&server.key),
        )
        .await,
        400,
    );
    assert_json_error(
        "/ws without an upgrade",
        send_raw(http.get(url("/ws?env=default")).bearer_auth(&server.key)).await,
        400,
    );
    assert_json_error(
        "a watch without an upgrade",
        send_raw(
            http.get(url("/api/v1/config/c/watch"))
                .bearer_auth(&server.key),
        )
        .await,
        400,
    );
    assert_json_error(
        "a duplicated query parameter",
        send_raw(
            http.get(url("/api/v1/events?limit=1&limit=2"))
                .bearer_auth(&server.key),
        )
        .await,
        400,
    );
    let big = vec![b'x'; 200 * 1024];
    assert_json_error(
        "a Connect body over the limit",
        send_raw(
            http.post(url("/ironflow.v1.IronflowService/Emit"))
                .bearer_auth(&server.key)
                .header("content-type", "application/json")
                .body(big.clone()),
        )
        .await,
        413,
    );
    assert_json_error(
        "a REST body over the limit",
        send_raw(
            http.post(url("/api/v1/events"))
                .bearer_auth(&server.key)
                .header("content-type", "application/json")
                .body(big),
        )
        .await,
        413,
    );
    assert_json_error(
        "no route",
        send_raw(http.get(url("/nowhere")).bearer_auth(&server.key)).await,
        404,
    );
    server.stop().await;
}

/// Defect 8: negative sync timeouts and non-ASCII environment names are refused.
async fn small_input_checks(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "s", "triggers": [{"event": "s.go"}]}))
        .await;
    for (method, body) in [
        ("TriggerSync", json!({"event": "s.go", "timeoutMs": -1})),
        (
            "InvokeFunctionSync",
            json!({"functionId": "s", "timeoutMs": -1}),
        ),
    ] {
        let (status, answer) = server.connect_json(method, body).await;
        assert_eq!(status, 400, "{method}: {answer}");
        assert!(message(&answer).contains("timeout_ms"), "{answer}");
    }
    let runs: Value = server.get_json("/api/v1/runs").await;
    assert_eq!(
        runs["runs"].as_array().map(Vec::len),
        Some(0),
        "nothing was started: {runs}"
    );
    let header = reqwest::header::HeaderValue::from_bytes("prød".as_bytes()).expect("bytes");
    let response = server
        .get("/api/v1/events")
        .header("x-ironflow-environment", header)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert!(message(&body).contains("x-ironflow-environment"), "{body}");
    server.stop().await;
}

both_backends! {
    cel_bombs_refused => cel_bombs_are_refused_when_accepted;
    stored_bomb_never_matches => a_stored_bomb_never_matches;
    nul_refused => nul_is_refused_everywhere;
    lease_expiry => lease_expiry_uses_an_attempt;
    job_callers => job_routes_check_the_caller;
    json_errors => every_error_is_json;
    small_checks => small_input_checks;
}

/// The database name of a test database URL.
fn database_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("a database name")
        .to_owned()
}

/// Deadlocks Postgres detected in `url`'s database, read once every other session of it ended
/// (a backend flushes its statistics as it exits).
async fn deadlocks_after_sessions_end(url: &str) -> i64 {
    let pool = common::pg_pool(url).await.expect("connect");
    eventually("the server's sessions end", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let others: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .expect("activity");
            (others == 0).then_some(())
        }
    })
    .await;
    let deadlocks: i64 =
        sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
            .bind(database_name(url))
            .fetch_one(&pool)
            .await
            .expect("stats");
    pool.close().await;
    deadlocks
}

/// Defect 4: workers that heartbeat all their jobs while their reports share group commits,
/// with cancels and timers in between. No request answers 5xx, every run ends, and on Postgres
/// not one deadlock is detected (heartbeats used to lock rows in scan order against batches
/// locking them one by one).
async fn load_without_deadlocks(backend: Backend) {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const WORKERS: usize = 8;
    const EVENTS: usize = 320;
    let server = Arc::new(TestServer::start(backend).await);
    server
        .register_function(json!({"id": "load", "triggers": [{"event": "load.go"}],
            "retry": {"maxAttempts": 3, "initialDelayMs": 50}}))
        .await;
    let server_errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let worker = Arc::new(FakeWorker::register(&server, &format!("load-{w}"), &["load"]).await);
        let active: Arc<Mutex<HashSet<String>>> = Arc::default();
        // Heartbeats naming every job the worker holds, as fast as they are answered.
        {
            let (worker, active, stop, errors) = (
                worker.clone(),
                active.clone(),
                stop.clone(),
                server_errors.clone(),
            );
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let jobs: Vec<String> = active.lock().expect("lock").iter().cloned().collect();
                    if !jobs.is_empty() && worker.heartbeat(&jobs).await >= 500 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            });
        }
        let (stop, errors) = (stop.clone(), server_errors.clone());
        tasks.spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                for job in worker.poll(8, 1).await {
                    let (worker, active, errors) = (worker.clone(), active.clone(), errors.clone());
                    running.spawn(async move {
                        let id = job["job_id"].as_str().expect("job id").to_owned();
                        let run = job["run_id"].as_str().expect("run id").to_owned();
                        active.lock().expect("lock").insert(id.clone());
                        let mut statuses = vec![worker.ack(&job).await];
                        for step in ["a", "b"] {
                            let (status, _) = worker
                                .report(&job, json!({"status": "progress", "steps": [step_entry(&run, step, json!(step))]}))
                                .await;
                            statuses.push(status);
                        }
                        let (status, _) = worker
                            .report(&job, json!({"status": "completed", "output": "done"}))
                            .await;
                        statuses.push(status);
                        active.lock().expect("lock").remove(&id);
                        let failed = statuses.iter().filter(|s| **s >= 500).count();
                        errors.fetch_add(failed, Ordering::Relaxed);
                    });
                }
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
    }
    // Events from four emitters, and cancels of every tenth run while the load goes on.
    let mut emitters = tokio::task::JoinSet::new();
    for e in 0..4 {
        let (server, errors) = (server.clone(), server_errors.clone());
        emitters.spawn(async move {
            let mut runs = Vec::new();
            for n in 0..EVENTS / 4 {
                let (status, body) = server
                    .emit_json(&json!({"name": "load.go", "data": {"e": e, "n": n}}))
                    .await;
                if status >= 500 {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let run = body["run_ids"][0].as_str().expect("a run").to_owned();
                if n.is_multiple_of(10) {
                    let response = server
                        .post(&format!("/api/v1/runs/{run}/cancel"))
                        .json(&json!({"reason": "load"}))
                        .send()
                        .await
                        .expect("sent");
                    if response.status().as_u16() >= 500 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                runs.push(run);
            }
            runs
        });
    }
    let mut runs = Vec::new();
    while let Some(batch) = emitters.join_next().await {
        runs.extend(batch.expect("emitter"));
    }
    assert_eq!(runs.len(), EVENTS);
    let unfinished_sql =
        "SELECT count(*) FROM runs WHERE status NOT IN ('completed', 'failed', 'cancelled')";
    eventually("every run ends", Duration::from_secs(180), || {
        let url = server.url.clone();
        async move { (common::raw_count(&url, unfinished_sql).await == 0).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    assert_eq!(
        server_errors.load(Ordering::Relaxed),
        0,
        "no request answered 5xx"
    );
    let completed = common::raw_count(
        &server.url,
        "SELECT count(*) FROM runs WHERE status = 'completed'",
    )
    .await;
    assert!(
        completed >= (EVENTS as i64) * 8 / 10,
        "{completed} of {EVENTS} completed"
    );
    let url = server.url.clone();
    let server = Arc::try_unwrap(server).unwrap_or_else(|_| panic!("the server is still shared"));
    let _database = server.stop_keeping_database().await;
    if backend == Backend::Postgres {
        assert_eq!(
            deadlocks_after_sessions_end(&url).await,
            0,
            "deadlocks detected"
        );
    }
}

/// Defect 5: connections killed under load (what a Postgres restart or failover does) are
/// answered 503 with `retryable: true`, never 500; every acknowledged event is stored, and a
/// retry with the same idempotency key stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_database_errors_are_retryable() {
    use std::sync::Arc;
    let server = Arc::new(TestServer::start(Backend::Postgres).await);
    let killer = {
        let url = server.url.clone();
        tokio::spawn(async move {
            let pool = common::pg_pool(&url).await.expect("connect");
            let mut killed = 0i64;
            for _ in 0..6 {
                // Paces the load generator; the assertions do not depend on timing.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
                )
                .fetch_one(&pool)
                .await
                .expect("terminate");
                killed += n;
            }
            pool.close().await;
            killed
        })
    };
    let mut emitters = tokio::task::JoinSet::new();
    for e in 0..4 {
        let server = server.clone();
        emitters.spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..150 {
                let key = format!("k-{e}-{n}");
                let (status, body) = server
                    .emit_json(&json!({"name": "t.go", "data": {}, "idempotency_key": key}))
                    .await;
                outcomes.push((key, status, body));
            }
            outcomes
        });
    }
    let mut outcomes = Vec::new();
    while let Some(batch) = emitters.join_next().await {
        outcomes.extend(batch.expect("emitter"));
    }
    let killed = killer.await.expect("killer");
    assert!(killed > 0, "the test killed server connections");
    let mut unavailable = 0;
    for (key, status, body) in &outcomes {
        match status {
            200 => {}
            503 => {
                unavailable += 1;
                assert_eq!(body["code"], "unavailable", "{key}: {body}");
                assert_eq!(body["retryable"], true, "{key}: {body}");
            }
            other => panic!("{key}: answered {other}: {body}"),
        }
    }
    // Every acknowledged event is stored; the refused ones are retried with their keys.
    for (key, status, _) in &outcomes {
        if *status != 200 {
            let (status, body) =
                eventually("a retry succeeds", Duration::from_secs(30), || async {
                    let (status, body) = server
                        .emit_json(&json!({"name": "t.go", "data": {}, "idempotency_key": key}))
                        .await;
                    (status == 200).then_some((status, body))
                })
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let stored = common::raw_count(
        &server.url,
        "SELECT count(*) FROM events WHERE name = 't.go'",
    )
    .await;
    let keys = common::raw_count(
        &server.url,
        "SELECT count(DISTINCT idempotency_key) FROM events WHERE name = 't.go'",
    )
    .await;
    assert_eq!(
        stored, 600,
        "{unavailable} were refused and retried; none lost, none twice"
    );
    assert_eq!(keys, 600);
}

both_backends! {
    load => load_without_deadlocks;
}
