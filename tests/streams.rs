//! `/ws` live subscriptions on both backends: system events for every run transition, topic
//! messages with replay and gap-free resume, emitted events, filters, and refusals.

mod common;

use common::ws::{Socket, connect, connect_to, next_frame, send};
use common::{Backend, FakeWorker, ServerConfig, TestServer, step_entry};
use serde_json::{Value, json};

async fn subscribe(socket: &mut Socket, pattern: &str, options: Value) -> Value {
    let request =
        json!({"type": "subscribe", "subscription": {"pattern": pattern, "options": options}});
    send(socket, request).await;
    next_frame(socket).await
}

async fn publish(server: &TestServer, topic: &str, data: Value) -> i64 {
    let body: Value = server
        .post("/ironflow.v1.PubSubService/Publish")
        .header("content-type", "application/json")
        .body(json!({"topic": topic, "data": data}).to_string())
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    body["sequence"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("sequence")
}

async fn system_events_follow_a_run(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, _) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": "watched", "triggers": [{"event": "w.go"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let worker = FakeWorker::register(&server, "w-ws", &["watched"]).await;
    let mut socket = connect(&server).await;
    let ok = subscribe(&mut socket, "system.run.>", json!({})).await;
    assert_eq!(ok["success"], true, "{ok}");
    let body: Value = server
        .post("/api/v1/events")
        .json(&json!({"name": "w.go"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let run = body["run_ids"][0].as_str().expect("run").to_owned();
    let job = worker.next_job().await;
    worker
        .report(
            &job,
            json!({"status": "completed", "output": 1, "steps": [step_entry(&run, "a", json!(1))]}),
        )
        .await;
    let mut subjects = Vec::new();
    while subjects.last().map(String::as_str)
        != Some(format!("system.run.{run}.run.completed").as_str())
    {
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        subjects.push(frame["topic"].as_str().expect("topic").to_owned());
    }
    let expected: Vec<String> = [
        "run.created",
        "run.dispatched",
        "step.completed",
        "run.completed",
    ]
    .iter()
    .map(|k| format!("system.run.{run}.{k}"))
    .collect();
    assert_eq!(subjects, expected, "every transition, in order");
    server.stop().await;
}

async fn topics_replay_and_resume_without_gaps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(publish(&server, "orders.created", json!({"i": i})).await);
    }
    publish(&server, "users.created", json!({"ignored": true})).await;
    let mut socket = connect(&server).await;
    let ok = subscribe(&mut socket, "orders.*", json!({"replay": 2})).await;
    assert_eq!(ok["success"], true);
    let replayed: Vec<i64> = [next_frame(&mut socket).await, next_frame(&mut socket).await]
        .iter()
        .map(|f| f["data"]["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(replayed, [1, 2], "the last two, oldest first");
    publish(&server, "users.created", json!({"ignored": true})).await;
    let live_seq = publish(&server, "orders.shipped", json!({"i": 3})).await;
    let live = next_frame(&mut socket).await;
    assert_eq!(
        (live["topic"].as_str(), live["data"]["i"].as_i64()),
        (Some("orders.shipped"), Some(3))
    );
    assert_eq!(live["meta"]["sequence"], live_seq);
    drop(socket);
    // Resume after the second message: the third and the live one, each once.
    let mut again = connect(&server).await;
    subscribe(
        &mut again,
        "topic:orders.>",
        json!({"startAfterSequence": seqs[1]}),
    )
    .await;
    let first = next_frame(&mut again).await;
    let second = next_frame(&mut again).await;
    assert_eq!(
        (first["data"]["i"].as_i64(), second["data"]["i"].as_i64()),
        (Some(2), Some(3))
    );
    publish(&server, "orders.created", json!({"i": 4})).await;
    assert_eq!(
        next_frame(&mut again).await["data"]["i"],
        4,
        "no duplicate of replayed messages"
    );
    server.stop().await;
}

async fn events_filters_and_refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut socket = connect(&server).await;
    let ok = subscribe(
        &mut socket,
        "events:order.*",
        json!({"filter": "data.amount > 100"}),
    )
    .await;
    assert_eq!(ok["success"], true);
    for amount in [50, 500] {
        server
            .post("/api/v1/events")
            .json(&json!({"name": "order.created", "data": {"amount": amount}}))
            .send()
            .await
            .expect("sent");
    }
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["topic"].as_str(), frame["data"]["amount"].as_i64()),
        (Some("order.created"), Some(500))
    );
    let bad = subscribe(&mut socket, "order..x", json!({})).await;
    assert_eq!(bad["success"], false);
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or_default()
            .contains("empty token"),
        "{bad}"
    );
    let anonymous =
        tokio_tungstenite::connect_async(format!("{}/ws", server.base.replace("http://", "ws://")))
            .await;
    assert!(anonymous.is_err(), "no key, no upgrade");
    server.stop().await;
}

async fn config_and_secret_changes_are_system_events(backend: Backend) {
    let key = ironflow::domain::secret::MasterKey::parse(&"ab".repeat(32)).expect("key");
    let server = TestServer::start_with(
        backend,
        common::ServerConfig {
            master_key: Some(key),
            ..common::ServerConfig::default()
        },
    )
    .await;
    let mut socket = connect(&server).await;
    assert_eq!(
        subscribe(&mut socket, "system.config.>", json!({})).await["success"],
        true
    );
    assert_eq!(
        subscribe(&mut socket, "system.secret.*.*", json!({})).await["success"],
        true
    );
    server
        .post("/api/v1/config/limits")
        .json(&json!({"max": 3}))
        .send()
        .await
        .expect("sent");
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["topic"], "system.config.limits.updated");
    assert_eq!(frame["data"]["payload"]["data"], json!({"max": 3}));
    server
        .post("/api/v1/secrets")
        .json(&json!({"name": "API_TOKEN", "value": "s3cr3t-value"}))
        .send()
        .await
        .expect("sent");
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["topic"], "system.secret.API_TOKEN.created");
    assert!(
        !frame.to_string().contains("s3cr3t-value"),
        "the value is never published"
    );
    server.stop().await;
}

both_backends! {
    config_secret_events => config_and_secret_changes_are_system_events;
    system_events => system_events_follow_a_run;
    topics => topics_replay_and_resume_without_gaps;
    events => events_filters_and_refusals;
}

/// Two servers on one Postgres: a subscriber on one node sees what the other node stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_crosses_nodes_over_notify() {
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.second_node().await;
    let mut socket = connect_to(&second.local_addr.to_string(), &first.key).await;
    assert_eq!(
        subscribe(&mut socket, "orders.*", json!({})).await["success"],
        true
    );
    assert_eq!(
        subscribe(&mut socket, "events:order.*", json!({})).await["success"],
        true
    );
    publish(&first, "orders.paid", json!({"n": 1})).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["topic"].as_str(), frame["data"]["n"].as_i64()),
        (Some("orders.paid"), Some(1))
    );
    first
        .post("/api/v1/events")
        .json(&json!({"name": "order.created", "data": {"n": 2}}))
        .send()
        .await
        .expect("sent");
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["topic"].as_str(), frame["data"]["n"].as_i64()),
        (Some("order.created"), Some(2))
    );
    second.shutdown.cancel();
    second.wait().await.expect("second stops");
    first.stop().await;
}

/// Two servers on one Postgres with `--nats-url`: live copies cross over NATS (visible on the
/// `ironflow.live.<env>` subjects), in order, each delivered once (the NOTIFY path is not used
/// as well); a message too large for NATS crosses by reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_crosses_nodes_over_nats() {
    use futures::StreamExt;
    let nats = ironflow_testcontainers::nats()
        .await
        .expect("a fresh nats-server");
    let observer = async_nats::connect(nats.url()).await.expect("NATS client");
    let mut copies = observer
        .subscribe("ironflow.live.>")
        .await
        .expect("subscribed");
    observer.flush().await.expect("subscription confirmed");
    let first = TestServer::start_with(
        Backend::Postgres,
        ServerConfig {
            nats_url: Some(nats.url()),
            ..ServerConfig::default()
        },
    )
    .await;
    let second = first.second_node().await;
    let mut socket = connect_to(&second.local_addr.to_string(), &first.key).await;
    for pattern in ["orders.*", "events:order.*"] {
        assert_eq!(
            subscribe(&mut socket, pattern, json!({})).await["success"],
            true
        );
    }
    let mut sequences = Vec::new();
    for n in 1..=3 {
        sequences.push(publish(&first, "orders.paid", json!({"n": n})).await);
    }
    first
        .post("/api/v1/events")
        .json(&json!({"name": "order.created", "data": {"n": 4}}))
        .send()
        .await
        .expect("sent");
    sequences.push(publish(&first, "orders.paid", json!({"n": 5})).await);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let frame = next_frame(&mut socket).await;
        seen.push((
            frame["topic"].as_str().map(str::to_owned),
            frame["data"]["n"].as_i64(),
        ));
    }
    let expected: Vec<_> = [
        ("orders.paid", 1),
        ("orders.paid", 2),
        ("orders.paid", 3),
        ("order.created", 4),
        ("orders.paid", 5),
    ]
    .iter()
    .map(|(t, n)| (Some((*t).to_owned()), Some(*n)))
    .collect();
    assert_eq!(seen, expected, "in order, each once");

    let copy = tokio::time::timeout(std::time::Duration::from_secs(10), copies.next())
        .await
        .expect("a copy on NATS within 10 s")
        .expect("subscription open");
    assert!(
        copy.subject.as_str().starts_with("ironflow.live."),
        "{}",
        copy.subject
    );
    let wire: Value = serde_json::from_slice(&copy.payload).expect("JSON copy");
    assert_eq!(
        (wire["subject"].as_str(), wire["data"]["n"].as_i64()),
        (Some("orders.paid"), Some(1))
    );
    assert_eq!(wire["sequence"].as_i64(), Some(sequences[0]));

    // Too large for one NATS message (1 MiB by default): the copy travels by reference and
    // the other node reads the stored message.
    let big = "x".repeat(1_047_400);
    let big_sequence = publish(&first, "orders.paid", json!({"n": 6, "s": big})).await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["data"]["n"].as_i64(), Some(6));
    assert_eq!(frame["data"]["s"].as_str().map(str::len), Some(big.len()));
    let reference = loop {
        let copy = tokio::time::timeout(std::time::Duration::from_secs(10), copies.next())
            .await
            .expect("the copies on NATS within 10 s")
            .expect("subscription open");
        let wire: Value = serde_json::from_slice(&copy.payload).expect("JSON copy");
        if wire["sequence"].as_i64() == Some(big_sequence) {
            break wire;
        }
    };
    assert_eq!(reference["by_reference"], true);
    assert_eq!(reference["data"], Value::Null);
    second.shutdown.cancel();
    second.wait().await.expect("second stops");
    first.stop().await;
}
