//! Push mode at the engine level on both backends, against a real axum endpoint on a loopback
//! port: the request the engine sends, memoized steps across a yield, signing, pull and push
//! never sharing jobs, and the circuit breaker's transitions (open, half-open probe, close,
//! reset) with their history entries.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Backend, DbGuard, FakeWorker, fresh_database, raw_count};
use ironflow::domain::breaker::BreakerSettings;
use ironflow::engine::PushOptions;
use ironflow::server::{ServeOptions, Server};
use serde_json::{Value, json};

const KEY: &str = "rust-push-test-key";

/// A push endpoint that records every request and answers like ironflow-py's `serve`: the
/// first call runs step `a` and sleeps, the next completes with `a`'s memoized output.
#[derive(Clone, Default)]
struct Endpoint {
    /// Headers, parsed body and raw body of every request, in arrival order.
    requests: Arc<Mutex<Vec<(HeaderMap, Value, String)>>>,
    /// Answer 503 (a transport failure for the engine) while set.
    failing: Arc<AtomicBool>,
    /// Holds every request this long before answering (milliseconds).
    delay_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Endpoint {
    async fn start() -> (Self, String) {
        let ep = Self::default();
        let app = axum::Router::new()
            .route("/push", axum::routing::post(answer))
            .with_state(ep.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind endpoint");
        let url = format!("http://{}/push", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (ep, url)
    }

    fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    fn bodies(&self) -> Vec<Value> {
        let requests = self.requests.lock().expect("lock");
        requests.iter().map(|(_, b, _)| b.clone()).collect()
    }
}

async fn answer(State(ep): State<Endpoint>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    ep.requests
        .lock()
        .expect("lock")
        .push((headers.clone(), req.clone(), body.clone()));
    let now = ep.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ep.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = ep.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    ep.in_flight.fetch_sub(1, Ordering::SeqCst);
    if ep.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"code": "DOWN", "message": "down"}})),
        );
    }
    let run = req["run_id"].as_str().unwrap_or_default();
    let steps = req["steps"].as_array().cloned().unwrap_or_default();
    let reply = if steps.is_empty() {
        let until = chrono::Utc::now() + chrono::Duration::milliseconds(300);
        json!({
            "status": "yielded",
            "steps": [{"id": format!("{run}:a:0"), "name": "a", "type": "invoke", "status": "completed",
                       "output": {"n": req["event"]["data"]["n"]}, "started_at": chrono::Utc::now().to_rfc3339(),
                       "ended_at": chrono::Utc::now().to_rfc3339(), "duration_ms": 0}],
            "yield": {"step_id": format!("{run}:nap:0"), "type": "sleep", "until": until.to_rfc3339()},
        })
    } else {
        json!({"status": "completed", "steps": [], "result": {"a": steps[0]["output"], "seen": steps.len()}})
    };
    (StatusCode::OK, axum::Json(reply))
}

struct Node {
    server: Option<Server>,
    base: String,
    http: reqwest::Client,
    _guard: DbGuard,
}

impl Node {
    async fn start(backend: Backend, push: PushOptions) -> Self {
        Self::start_on(backend, push, None).await
    }

    /// A node whose KV store, live fan-out and breaker mirror use NATS at `nats_url`.
    async fn start_on(backend: Backend, push: PushOptions, nats_url: Option<String>) -> Self {
        let (url, guard) = fresh_database(backend).await;
        let options = ServeOptions {
            bind: "127.0.0.1".parse().expect("loopback"),
            port: 0,
            database: common::db_options(&url),
            dev: true,
            bootstrap_key_file: None,
            max_payload_bytes: 1 << 20,
            lease_ttl: Duration::from_secs(90),
            master_key: None,
            nats_url,
            schema_enforcement: Default::default(),
            projection_lease_ttl: std::time::Duration::from_secs(15),
        };
        let server = ironflow::server::start_with_push(options, push, None)
            .await
            .expect("server starts");
        Self {
            base: format!("http://{}", server.local_addr),
            server: Some(server),
            http: reqwest::Client::new(),
            _guard: guard,
        }
    }

    fn db_url(&self) -> String {
        match &self._guard {
            DbGuard::Postgres(db) => db.url().to_owned(),
            DbGuard::Sqlite(dir) => dir.path().join("ironflow.db").display().to_string(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    async fn register_push(&self, id: &str, event: &str, endpoint: &str) {
        let (status, body) = self
            .post(
                "/ironflow.v1.IronflowService/RegisterFunction",
                json!({
                    "id": id, "triggers": [{"event": event}],
                    "preferredMode": "EXECUTION_MODE_PUSH", "endpointUrl": endpoint,
                    "retry": {"maxAttempts": 20, "initialDelayMs": 50, "backoffFactor": 1.0, "maxDelayMs": 50},
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn emit(&self, name: &str, data: Value) -> String {
        let (status, body) = self
            .post("/api/v1/events", json!({"name": name, "data": data}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["run_ids"][0].as_str().expect("one run").to_owned()
    }

    async fn run(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/runs/{id}")).await
    }

    async fn breakers(&self) -> Vec<Value> {
        self.get("/api/v1/circuit-breakers")
            .await
            .as_array()
            .cloned()
            .expect("a JSON array of breakers")
    }

    /// Waits until a breaker is in `state`; returns it.
    async fn breaker_in_state(&self, state: &str) -> Value {
        common::eventually(
            &format!("a breaker {state}"),
            Duration::from_secs(20),
            || async {
                self.breakers()
                    .await
                    .into_iter()
                    .find(|b| b["state"] == state)
            },
        )
        .await
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
            server.wait().await.expect("server stops cleanly");
        }
    }
}

async fn wait_status(node: &Node, run: &str, status: &str) -> Value {
    common::eventually(
        &format!("run {run} {status}"),
        Duration::from_secs(20),
        || async {
            let r = node.run(run).await;
            (r["status"] == status).then_some(r)
        },
    )
    .await
}

fn signed_options() -> PushOptions {
    PushOptions {
        signing_key: Some(KEY.into()),
        ..PushOptions::default()
    }
}

async fn request_shape_and_memoized_resume(backend: Backend) {
    let node = Node::start(backend, signed_options()).await;
    let (ep, url) = Endpoint::start().await;
    node.register_push("p-steps", "p.steps", &url).await;
    let run = node.emit("p.steps", json!({"n": 7})).await;
    let done = wait_status(&node, &run, "completed").await;
    assert_eq!(done["output"], json!({"a": {"n": 7}, "seen": 2}), "{done}");

    let requests = ep.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 2, "one request per dispatch");
    for (headers, body, raw) in &requests {
        assert_eq!(body["run_id"], run.as_str());
        assert_eq!(body["function_id"], "p-steps");
        assert_eq!(body["attempt"], 1);
        assert_eq!(body["event"]["name"], "p.steps");
        assert_eq!(body["event"]["data"], json!({"n": 7}));
        assert!(body["secrets"].is_object(), "{body}");
        let sig = headers
            .get("x-ironflow-signature")
            .and_then(|v| v.to_str().ok())
            .expect("signed");
        let ts: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=<unix>");
        assert!(
            (chrono::Utc::now().timestamp() - ts).abs() < 60,
            "a fresh timestamp"
        );
        assert_eq!(
            sig,
            ironflow::domain::signature::sign(raw.as_bytes(), KEY, ts)
        );
    }
    let second = &requests[1].1;
    let steps = second["steps"].as_array().expect("steps");
    assert_eq!(
        steps[0],
        json!({"id": format!("{run}:a:0"), "name": "a", "output": {"n": 7}, "status": "completed"})
    );
    assert_eq!(steps[1]["id"], format!("{run}:nap:0"));
    assert_eq!(steps[1]["status"], "completed");
    node.stop().await;
}

async fn pull_and_push_never_share_jobs(backend: Backend) {
    let node = Node::start(backend, PushOptions::default()).await;
    let (ep, url) = Endpoint::start().await;
    node.register_push("mixed-push", "mix.push", &url).await;
    let (status, body) = node
        .post(
            "/ironflow.v1.IronflowService/RegisterFunction",
            json!({"id": "mixed-pull", "triggers": [{"event": "mix.pull"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A pull worker that (wrongly) claims to serve both functions.
    let worker =
        FakeWorker::register_at(&node.base, "", "w-mixed", &["mixed-push", "mixed-pull"]).await;
    let push_run = node.emit("mix.push", json!({"n": 1})).await;
    let pull_run = node.emit("mix.pull", json!({"n": 2})).await;
    wait_status(&node, &push_run, "completed").await;
    let jobs = worker.poll(10, 1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["run_id"], pull_run.as_str());
    assert!(
        worker.poll(10, 0).await.is_empty(),
        "the push run is never handed to a pull worker"
    );
    assert!(
        ep.bodies().iter().all(|b| b["run_id"] == push_run.as_str()),
        "the pull run is never pushed"
    );
    node.stop().await;
}

async fn breaker_opens_waits_and_resets(backend: Backend) {
    let node = Node::start(backend, PushOptions::default()).await;
    let (ep, url) = Endpoint::start().await;
    ep.failing.store(true, Ordering::SeqCst);
    node.register_push("p-break", "p.break", &url).await;
    let run = node.emit("p.break", json!({"n": 3})).await;
    let opened = node.breaker_in_state("open").await;
    assert_eq!(opened["key"], format!("p-break|{url}"));
    assert_eq!(opened["consecutive_fails"], 5);
    assert_eq!(ep.count(), 5);
    // Open for 60 s: nothing is sent and the run keeps its attempts. The witness is a second
    // push function on a healthy endpoint whose run takes two requests 300 ms apart (a step,
    // a sleep, the result). The dispatcher's passes are sequential and take functions in id
    // order once each endpoint has been served ("p-break" < "p-witness"), so by the time the
    // witness's second request has been answered the dispatcher has looked at p-break's retry
    // (due 50 ms after the breaker opened) at least once and left it queued.
    let (witness_ep, witness_url) = Endpoint::start().await;
    node.register_push("p-witness", "p.witness", &witness_url)
        .await;
    let witness = node.emit("p.witness", json!({"n": 1})).await;
    wait_status(&node, &witness, "completed").await;
    assert_eq!(witness_ep.count(), 2);
    assert_eq!(ep.count(), 5, "no requests while open");
    let queued = format!("SELECT count(*) FROM jobs WHERE run_id = '{run}' AND state = 'queued'");
    assert_eq!(
        raw_count(&node.db_url(), &queued).await,
        1,
        "the retry waits, unclaimed"
    );
    let waiting = node.run(&run).await;
    assert_eq!(waiting["status"], "running", "{waiting}");
    assert_eq!(waiting["attempt"], 6, "{waiting}");

    ep.failing.store(false, Ordering::SeqCst);
    let key = format!("p-break|{url}");
    let encoded: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, reset) = node
        .post(
            &format!("/api/v1/circuit-breakers/{encoded}/reset"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["state"], "closed");
    wait_status(&node, &run, "completed").await;

    let url_db = node.db_url();
    let count = |kind: &str| {
        format!(
            "SELECT count(*) FROM ironflow_history WHERE kind = '{kind}' AND function_id = 'p-break'"
        )
    };
    assert_eq!(
        raw_count(&url_db, &count("circuit_breaker.opened")).await,
        1
    );
    assert_eq!(raw_count(&url_db, &count("circuit_breaker.reset")).await, 1);
    node.stop().await;
}

async fn breaker_half_opens_and_a_probe_closes_it(backend: Backend) {
    let push = PushOptions {
        breaker: BreakerSettings {
            failure_threshold: 2,
            open_for: Duration::from_secs(1),
        },
        ..PushOptions::default()
    };
    let node = Node::start(backend, push).await;
    let (ep, url) = Endpoint::start().await;
    ep.failing.store(true, Ordering::SeqCst);
    node.register_push("p-probe", "p.probe", &url).await;
    let run = node.emit("p.probe", json!({"n": 1})).await;
    node.breaker_in_state("open").await;
    assert_eq!(ep.count(), 2);
    ep.failing.store(false, Ordering::SeqCst);
    // After the window one probe goes out; it succeeds, the breaker closes, the run goes on.
    wait_status(&node, &run, "completed").await;
    let closed = node.breakers().await;
    assert_eq!(closed[0]["state"], "closed", "{closed:?}");
    assert_eq!(closed[0]["consecutive_fails"], 0);
    let url_db = node.db_url();
    let kinds = "SELECT count(*) FROM ironflow_history WHERE function_id = 'p-probe' AND kind IN \
         ('circuit_breaker.opened', 'circuit_breaker.half_opened', 'circuit_breaker.closed')";
    assert_eq!(raw_count(&url_db, kinds).await, 3);
    node.stop().await;
}

async fn slow_endpoints_time_out_and_concurrency_is_bounded(backend: Backend) {
    let push = PushOptions {
        request_timeout: Duration::from_millis(1500),
        max_in_flight_per_endpoint: 2,
        ..PushOptions::default()
    };
    let node = Node::start(backend, push).await;
    let (ep, url) = Endpoint::start().await;
    // Each request takes 200 ms: six runs through two slots never overlap more than two.
    ep.delay_ms.store(200, Ordering::SeqCst);
    node.register_push("p-slots", "p.slots", &url).await;
    let mut runs = Vec::new();
    for n in 0..6 {
        runs.push(node.emit("p.slots", json!({"n": n})).await);
    }
    for run in &runs {
        wait_status(&node, run, "completed").await;
    }
    assert_eq!(
        ep.max_in_flight.load(Ordering::SeqCst),
        2,
        "bounded per endpoint"
    );

    // Slower than the request timeout: a failed attempt, retried, counted by the breaker.
    ep.delay_ms.store(3000, Ordering::SeqCst);
    let (status, body) = node
        .post(
            "/ironflow.v1.IronflowService/RegisterFunction",
            json!({
                "id": "p-slow", "triggers": [{"event": "p.slow"}],
                "preferredMode": "EXECUTION_MODE_PUSH", "endpointUrl": url,
                "retry": {"maxAttempts": 2, "initialDelayMs": 50, "backoffFactor": 1.0, "maxDelayMs": 50},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = node.emit("p.slow", json!({"n": 1})).await;
    let failed = wait_status(&node, &run, "failed").await;
    assert_eq!(failed["error"]["code"], "PUSH_ENDPOINT_ERROR", "{failed}");
    assert_eq!(failed["attempt"], 2, "{failed}");
    let breaker = node
        .breakers()
        .await
        .into_iter()
        .find(|b| b["function_id"] == "p-slow")
        .expect("a breaker for the slow function");
    assert_eq!(breaker["consecutive_fails"], 2, "{breaker}");
    assert_eq!(breaker["state"], "closed", "{breaker}");
    node.stop().await;
}

/// With NATS, every transition is copied to the `SYS_circuit_breakers` KV bucket, under
/// `<environment id>.<base64url of the breaker key>`.
async fn breaker_state_is_mirrored_to_nats(backend: Backend) {
    use base64::Engine as _;
    let nats = ironflow_testcontainers::nats()
        .await
        .expect("a fresh nats-server");
    let push = PushOptions {
        breaker: BreakerSettings {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
        },
        ..PushOptions::default()
    };
    let node = Node::start_on(backend, push, Some(nats.url())).await;
    let (ep, url) = Endpoint::start().await;
    ep.failing.store(true, Ordering::SeqCst);
    node.register_push("p-mirror", "p.mirror", &url).await;
    let run = node.emit("p.mirror", json!({"n": 1})).await;
    let opened = node.breaker_in_state("open").await;
    let key = format!(
        "{}.{}",
        opened["environment_id"].as_str().expect("environment id"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p-mirror|{url}"))
    );
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("NATS"));
    let mirrored = |state: &'static str| {
        let (js, key) = (js.clone(), key.clone());
        async move {
            let bucket = js.get_key_value("SYS_circuit_breakers").await.ok()?;
            let value = bucket.get(&key).await.ok()??;
            let doc: Value = serde_json::from_slice(&value).expect("JSON breaker");
            (doc["state"] == state).then_some(doc)
        }
    };
    let doc = common::eventually("the open breaker in NATS", Duration::from_secs(10), || {
        mirrored("open")
    })
    .await;
    assert_eq!(doc["key"], format!("p-mirror|{url}"));
    assert_eq!(doc["consecutive_fails"], 2);
    assert_eq!(doc["open_until"], opened["open_until"]);

    ep.failing.store(false, Ordering::SeqCst);
    let encoded: String = format!("p-mirror|{url}")
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let (status, reset) = node
        .post(
            &format!("/api/v1/circuit-breakers/{encoded}/reset"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{reset}");
    common::eventually(
        "the closed breaker in NATS",
        Duration::from_secs(10),
        || mirrored("closed"),
    )
    .await;
    wait_status(&node, &run, "completed").await;
    node.stop().await;
}

/// Functions behind one URL (ironflow-py's `serve` has one per app) share its slots: a busy
/// function's backlog does not hold back another function's run.
async fn functions_sharing_an_endpoint_take_turns(backend: Backend) {
    let push = PushOptions {
        max_in_flight_per_endpoint: 2,
        ..PushOptions::default()
    };
    let node = Node::start(backend, push).await;
    let (ep, url) = Endpoint::start().await;
    ep.delay_ms.store(150, Ordering::SeqCst);
    // `p-a-busy` sorts first: the order a dispatcher without turns would always serve.
    node.register_push("p-a-busy", "p.busy", &url).await;
    node.register_push("p-b-quiet", "p.quiet", &url).await;
    let mut busy = Vec::new();
    for n in 0..20 {
        busy.push(node.emit("p.busy", json!({"n": n})).await);
    }
    let before = ep.count();
    let quiet = node.emit("p.quiet", json!({"n": 100})).await;
    wait_status(&node, &quiet, "completed").await;
    let first_quiet = ep
        .bodies()
        .iter()
        .position(|b| b["function_id"] == "p-b-quiet")
        .expect("the quiet function was called");
    // 20 busy runs make 40 requests through two slots; taking turns, the quiet run goes as
    // soon as a slot frees rather than after the busy backlog.
    assert!(
        first_quiet <= before + 2,
        "the quiet run waited behind {} busy requests",
        first_quiet.saturating_sub(before)
    );
    for run in &busy {
        wait_status(&node, run, "completed").await;
    }
    node.stop().await;
}

/// A pause requested while the endpoint works on a dispatch takes effect at its answer: the
/// answer's steps are recorded, the yield's sleep is kept for the resume, the run pauses; once
/// resumed it is pushed again with the step memoized and completes.
async fn a_push_run_pauses_at_the_endpoints_answer(backend: Backend) {
    let node = Node::start(backend, signed_options()).await;
    let (ep, url) = Endpoint::start().await;
    ep.delay_ms.store(800, Ordering::SeqCst);
    node.register_push("p-pause", "p.pause", &url).await;
    let run = node.emit("p.pause", json!({"n": 3})).await;
    common::eventually(
        "the endpoint holds the dispatch",
        Duration::from_secs(10),
        || async { (ep.in_flight.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    let (status, body) = node
        .post(
            "/ironflow.v1.IronflowService/PauseRun",
            json!({"run_id": run}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pause_requested")),
        "{body}"
    );
    let paused = wait_status(&node, &run, "paused").await;
    assert_eq!(paused["pause_reason"], "injection", "{paused}");
    let steps = node.get(&format!("/api/v1/runs/{run}/steps")).await;
    assert_eq!(steps["steps"][0]["output"], json!({"n": 3}), "{steps}");
    ep.delay_ms.store(0, Ordering::SeqCst);
    let (status, body) = node
        .post(
            "/ironflow.v1.IronflowService/ResumeRun",
            json!({"run_id": run}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_status(&node, &run, "completed").await;
    assert_eq!(done["output"], json!({"a": {"n": 3}, "seen": 2}), "{done}");
    assert_eq!(
        ep.count(),
        2,
        "one push before the pause, one after the resume"
    );
    node.stop().await;
}

both_backends! {
    pause_at_the_answer => a_push_run_pauses_at_the_endpoints_answer;
    endpoint_turns => functions_sharing_an_endpoint_take_turns;
    breaker_mirror => breaker_state_is_mirrored_to_nats;
    slots_and_timeouts => slow_endpoints_time_out_and_concurrency_is_bounded;
    request_shape => request_shape_and_memoized_resume;
    pull_push_separation => pull_and_push_never_share_jobs;
    breaker_reset => breaker_opens_waits_and_resets;
    breaker_probe => breaker_half_opens_and_a_probe_closes_it;
}
