//! Config documents and encrypted secrets on both backends: revisions, merge, conditions;
//! ciphertext-only storage, write-only values, injection into exactly the declared runs, and a
//! loud failure for the wrong master key.

mod common;

use common::{Backend, FakeWorker, ServerConfig, TestServer, raw_count};
use ironflow::domain::secret::MasterKey;
use serde_json::{Value, json};

const KEY_A: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";
const KEY_B: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn config_documents(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, set) = send(
        server
            .post("/api/v1/config/payments")
            .json(&json!({"limit": 5, "mode": "live"})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["revision"], 1);
    let patch = server
        .http
        .patch(format!("{}/api/v1/config/payments", server.base))
        .bearer_auth(&server.key);
    let (status, patched) = send(patch.json(&json!({"limit": 10, "region": "eu"}))).await;
    assert_eq!((status, patched["revision"].as_i64()), (200, Some(2)));
    let (_, doc) = send(server.get("/api/v1/config/payments")).await;
    assert_eq!(
        doc["data"],
        json!({"limit": 10, "mode": "live", "region": "eu"}),
        "shallow merge keeps other keys"
    );
    assert!(doc["updatedAt"].is_string());
    let stale = server
        .post("/api/v1/config/payments")
        .header("if-match", "1")
        .json(&json!({"limit": 1}));
    assert_eq!(send(stale).await.0, 412, "a stale revision is refused");
    let fresh = server
        .post("/api/v1/config/payments")
        .header("if-match", "2")
        .json(&json!({"limit": 1}));
    assert_eq!(send(fresh).await.1["revision"], 3);
    let (_, doc) = send(server.get("/api/v1/config/payments")).await;
    assert_eq!(
        doc["data"],
        json!({"limit": 1}),
        "POST replaces the whole document"
    );
    let create_only = server
        .post("/api/v1/config/payments")
        .header("if-none-match", "*")
        .json(&json!({}));
    assert_eq!(send(create_only).await.0, 412);
    assert_eq!(
        send(server.post("/api/v1/config/payments").json(&json!([1, 2])))
            .await
            .0,
        400
    );
    assert_eq!(
        send(server.post("/api/v1/config/bad.name").json(&json!({})))
            .await
            .0,
        400
    );
    let (_, list) = send(server.get("/api/v1/config")).await;
    assert_eq!(list["configs"][0]["name"], "payments");
    for _ in 0..2 {
        let del = server
            .http
            .delete(format!("{}/api/v1/config/payments", server.base))
            .bearer_auth(&server.key)
            .send()
            .await
            .expect("sent");
        assert_eq!(del.status(), 204, "delete is idempotent");
    }
    assert_eq!(send(server.get("/api/v1/config/payments")).await.0, 404);
    assert_eq!(
        raw_count(
            &server.url,
            "SELECT COUNT(*) FROM history WHERE kind = 'config.updated'"
        )
        .await,
        3
    );
    server.stop().await;
}

async fn secrets_need_a_master_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = send(
        server
            .post("/api/v1/secrets")
            .json(&json!({"name": "DB_PASSWORD", "value": "x"})),
    )
    .await;
    assert_eq!(status, 412, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("IRONFLOW_MASTER_KEY"),
        "says how to fix it: {body}"
    );
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM secrets").await,
        0,
        "no silent plaintext"
    );
    server.stop().await;
}

async fn secrets_are_sealed_and_write_only(backend: Backend) {
    let key = MasterKey::parse(KEY_A).expect("key");
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            master_key: Some(key),
            ..ServerConfig::default()
        },
    )
    .await;
    let plaintext = "hunter2-very-secret";
    let (status, created) =
        send(server.post("/api/v1/secrets").json(
            &json!({"name": "DB_PASSWORD", "value": plaintext, "description": "primary db"}),
        ))
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("value").is_none());
    send(
        server
            .post("/api/v1/secrets")
            .json(&json!({"name": "OTHER", "value": "not-for-you"})),
    )
    .await;
    assert_eq!(
        send(
            server
                .post("/api/v1/secrets")
                .json(&json!({"name": "DB_PASSWORD", "value": "x"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        send(
            server
                .post("/api/v1/secrets")
                .json(&json!({"name": "has.dot", "value": "x"}))
        )
        .await
        .0,
        400
    );
    for path in ["/api/v1/secrets", "/api/v1/secrets/DB_PASSWORD"] {
        let text = server
            .get(path)
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("body");
        assert!(!text.contains(plaintext), "{path} never returns the value");
    }
    let leaked = match backend {
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM secrets WHERE position(convert_to('{plaintext}', 'UTF8') in ciphertext) > 0"
        ),
        Backend::Sqlite => format!(
            "SELECT COUNT(*) FROM secrets WHERE instr(ciphertext, CAST('{plaintext}' AS BLOB)) > 0"
        ),
    };
    assert_eq!(
        raw_count(&server.url, &leaked).await,
        0,
        "the table holds only ciphertext"
    );
    assert_eq!(
        raw_count(
            &server.url,
            "SELECT COUNT(*) FROM secrets WHERE key_id LIKE 'mk_%'"
        )
        .await,
        2
    );
    let put = server
        .http
        .put(format!("{}/api/v1/secrets/DB_PASSWORD", server.base))
        .bearer_auth(&server.key);
    let (status, updated) = send(put.json(&json!({"value": "rotated"}))).await;
    assert_eq!((status, updated["revision"].as_i64()), (200, Some(2)));

    // A pull job gets the declared secret and no other.
    let (status, body) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": "needs-db", "triggers": [{"event": "db.go"}], "secrets": ["DB_PASSWORD"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let worker = FakeWorker::register(&server, "w-secrets", &["needs-db"]).await;
    send(
        server
            .post("/api/v1/events")
            .json(&json!({"name": "db.go"})),
    )
    .await;
    let job = worker.next_job().await;
    assert_eq!(job["context"]["secrets"], json!({"DB_PASSWORD": "rotated"}));

    let del = server
        .http
        .delete(format!("{}/api/v1/secrets/DB_PASSWORD", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(del.status(), 204);
    assert_eq!(send(server.get("/api/v1/secrets/DB_PASSWORD")).await.0, 404);
    server.stop().await;
}

async fn wrong_master_key_fails_loudly(backend: Backend) {
    let (url, _guard) = common::fresh_database(backend).await;
    let options = |key: &str| ironflow::server::ServeOptions {
        bind: "127.0.0.1".parse().expect("ip"),
        port: 0,
        database: common::db_options(&url),
        dev: true,
        bootstrap_key_file: None,
        max_payload_bytes: 1 << 20,
        lease_ttl: std::time::Duration::from_secs(90),
        master_key: Some(MasterKey::parse(key).expect("key")),
        nats_url: None,
        schema_enforcement: Default::default(),
        projection_lease_ttl: std::time::Duration::from_secs(15),
    };
    let server = ironflow::server::start(options(KEY_A), None)
        .await
        .expect("starts");
    let base = format!("http://{}", server.local_addr);
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/secrets"))
        .json(&json!({"name": "S", "value": "v"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    server.shutdown.cancel();
    server.wait().await.expect("stops");
    let err = ironflow::server::start(options(KEY_B), None)
        .await
        .err()
        .expect("the wrong key is refused at start");
    let message = format!("{err:#}");
    assert!(message.contains("master key"), "{message}");
}

async fn publishing_is_durable_and_starts_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, _) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": "not-on-topics", "triggers": [{"event": "orders.>"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let srv = &server;
    let publish = |body: Value| async move {
        let r = srv
            .post("/ironflow.v1.PubSubService/Publish")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("sent");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (status, first) =
        publish(json!({"topic": "orders.shipped", "data": {"id": 1}, "idempotencyKey": "k1"}))
            .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["eventId"].as_str().is_some_and(|s| !s.is_empty()));
    let (_, second) = publish(json!({"topic": "orders.shipped", "dataValue": [1, 2]})).await;
    assert!(
        second["sequence"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            > first["sequence"].as_str().and_then(|s| s.parse().ok())
    );
    let (_, again) =
        publish(json!({"topic": "orders.shipped", "data": {"id": 1}, "idempotencyKey": "k1"}))
            .await;
    assert_eq!(
        (again["eventId"].clone(), again["duplicate"].clone()),
        (first["eventId"].clone(), json!(true))
    );
    assert_eq!(
        publish(json!({"topic": "orders.*", "data": {}})).await.0,
        400,
        "wildcards are for subscribers"
    );
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM messages").await,
        2
    );
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM runs").await,
        0,
        "publishing does not start functions"
    );
    let (status, body) = server.connect_json("NoSuchThing", json!({})).await;
    assert_eq!(status, 404, "{body}");
    server.stop().await;
}

both_backends! {
    publish => publishing_is_durable_and_starts_nothing;
    configs => config_documents;
    no_master_key => secrets_need_a_master_key;
    sealed_secrets => secrets_are_sealed_and_write_only;
    wrong_key => wrong_master_key_fails_loudly;
}
