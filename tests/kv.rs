//! The KV store over REST on every backend — the database (SQLite, Postgres) and NATS
//! JetStream (a real `nats-server`, `--nats-url`): buckets, revisions, create-only and
//! compare-and-set writes (atomic under concurrent writers), tombstones, purge, history, TTL
//! and key filters; NATS buckets scoped per environment; a bad NATS URL fails the start.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::kv::{Setup, start};
use common::{Backend, TestServer};
use serde_json::{Value, json};

async fn create_bucket(server: &TestServer, body: Value) -> (u16, Value) {
    let r = server
        .post("/api/v1/kv/buckets")
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn put(
    server: &TestServer,
    bucket: &str,
    key: &str,
    value: &str,
    header: Option<(&str, String)>,
) -> (u16, Value) {
    let mut req = server
        .http
        .put(format!(
            "{}/api/v1/kv/buckets/{bucket}/keys/{key}",
            server.base
        ))
        .bearer_auth(&server.key)
        .header("content-type", "application/json")
        .body(value.to_owned());
    if let Some((name, v)) = header {
        req = req.header(name, v);
    }
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &TestServer, bucket: &str, key: &str) -> (u16, Value) {
    let r = server
        .get(&format!("/api/v1/kv/buckets/{bucket}/keys/{key}"))
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn decoded(entry: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry["value"].as_str().expect("value"))
        .expect("base64");
    String::from_utf8(bytes).expect("utf8")
}

async fn buckets_and_values(setup: Setup) {
    let server = start(setup).await;
    let (status, bucket) = create_bucket(
        &server,
        json!({"name": "orders", "description": "order state", "history": 3}),
    )
    .await;
    assert_eq!(status, 201, "{bucket}");
    assert_eq!(bucket["history"], 3);
    assert_eq!(
        create_bucket(&server, json!({"name": "orders"})).await.0,
        409
    );
    let (status, body) = create_bucket(&server, json!({"name": "bad name!"})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bucket name"),
        "{body}"
    );
    let (status, first) = put(&server, "orders", "o.1", r#"{"status": "new"}"#, None).await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = put(&server, "orders", "o.2", "plain text", None).await;
    assert!(
        second["revision"].as_i64() > first["revision"].as_i64(),
        "revisions increase per bucket"
    );
    let (status, entry) = get(&server, "orders", "o.1").await;
    assert_eq!(status, 200);
    assert_eq!(
        decoded(&entry),
        r#"{"status": "new"}"#,
        "values are stored verbatim"
    );
    assert_eq!(entry["operation"], "put");
    assert_eq!(get(&server, "orders", "o.404").await.0, 404);
    assert_eq!(get(&server, "nobucket", "o.1").await.0, 404);
    assert_eq!(
        put(&server, "nobucket", "o.1", "x", None).await.0,
        404,
        "writes to a missing bucket are 404"
    );
    assert_eq!(put(&server, "orders", "bad..key", "x", None).await.0, 400);
    let keys: Value = server
        .get_json("/api/v1/kv/buckets/orders/keys?filter=o.*")
        .await;
    assert_eq!(keys["keys"], json!(["o.1", "o.2"]));
    let bad_filter = server
        .get("/api/v1/kv/buckets/orders/keys?filter=o..*")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_filter.status(), 400);
    let list: Value = server.get_json("/api/v1/kv/buckets").await;
    assert_eq!(list["buckets"][0]["values"], 2);
    server.stop().await;
}

async fn conditional_writes(setup: Setup) {
    let server = start(setup).await;
    create_bucket(&server, json!({"name": "claims", "history": 5})).await;
    let create_only = || Some(("if-none-match", "*".to_owned()));
    let (status, claimed) = put(&server, "claims", "job-1", "\"me\"", create_only()).await;
    assert_eq!(status, 200);
    assert_eq!(
        put(&server, "claims", "job-1", "\"you\"", create_only())
            .await
            .0,
        412,
        "create-only over a live value"
    );
    let rev = claimed["revision"].as_i64().expect("rev");
    assert_eq!(
        put(
            &server,
            "claims",
            "job-1",
            "\"v2\"",
            Some(("if-match", (rev + 100).to_string()))
        )
        .await
        .0,
        412
    );
    let (status, updated) = put(
        &server,
        "claims",
        "job-1",
        "\"v2\"",
        Some(("if-match", rev.to_string())),
    )
    .await;
    assert_eq!(status, 200);
    assert!(updated["revision"].as_i64() > Some(rev));
    let del = server
        .http
        .delete(format!(
            "{}/api/v1/kv/buckets/claims/keys/job-1",
            server.base
        ))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(del.status(), 204);
    assert_eq!(
        get(&server, "claims", "job-1").await.0,
        404,
        "a tombstone reads as absent"
    );
    assert_eq!(
        put(&server, "claims", "job-1", "\"again\"", create_only())
            .await
            .0,
        200,
        "create-only succeeds over a tombstone"
    );
    let history: Value = server
        .get_json("/api/v1/kv/buckets/claims/keys/job-1/history")
        .await;
    let ops: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["operation"].as_str())
        .collect();
    assert_eq!(ops, ["put", "put", "delete", "put"]);
    let purge = server
        .http
        .delete(format!(
            "{}/api/v1/kv/buckets/claims/keys/job-1?purge=true",
            server.base
        ))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(purge.status(), 204);
    let history: Value = server
        .get_json("/api/v1/kv/buckets/claims/keys/job-1/history")
        .await;
    assert_eq!(history["count"], 0, "purge removes every revision");
    server.stop().await;
}

/// 20 writers increment one counter through CAS retries; no update is lost.
async fn cas_race_loses_nothing(setup: Setup) {
    let server = start(setup).await;
    create_bucket(&server, json!({"name": "counters"})).await;
    put(&server, "counters", "hits", "0", None).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, base, key) = (server.http.clone(), server.base.clone(), server.key.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/api/v1/kv/buckets/counters/keys/hits");
            loop {
                let entry: Value = http
                    .get(&url)
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                let n: i64 = decoded(&entry).parse().expect("number");
                let rev = entry["revision"].as_i64().expect("rev");
                let r = http
                    .put(&url)
                    .bearer_auth(&key)
                    .header("if-match", rev.to_string())
                    .body((n + 1).to_string())
                    .send()
                    .await
                    .expect("put");
                match r.status().as_u16() {
                    200 => return,
                    412 => continue,
                    other => panic!("unexpected {other}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(decoded(&get(&server, "counters", "hits").await.1), "20");
    server.stop().await;
}

async fn history_limits_and_ttl(setup: Setup) {
    let server = start(setup).await;
    create_bucket(
        &server,
        json!({"name": "short", "history": 2, "ttl_seconds": 1, "max_value_size": 8}),
    )
    .await;
    for v in ["1", "2", "3"] {
        assert_eq!(put(&server, "short", "k", v, None).await.0, 200);
    }
    let history: Value = server
        .get_json("/api/v1/kv/buckets/short/keys/k/history")
        .await;
    assert_eq!(history["count"], 2, "only `history` revisions are kept");
    let (status, body) = put(&server, "short", "big", "123456789", None).await;
    assert_eq!(status, 413, "{body}");
    create_bucket(&server, json!({"name": "tiny", "max_bytes": 10})).await;
    assert_eq!(put(&server, "tiny", "a", "123456", None).await.0, 200);
    let (status, body) = put(&server, "tiny", "b", "123456", None).await;
    assert_eq!(status, 413, "max_bytes is enforced: {body}");
    assert_eq!(get(&server, "short", "k").await.0, 200);
    common::eventually("the value expires", Duration::from_secs(10), || async {
        (get(&server, "short", "k").await.0 == 404).then_some(())
    })
    .await;
    let keys: Value = server.get_json("/api/v1/kv/buckets/short/keys").await;
    assert_eq!(keys["count"], 0, "expired keys are not listed");
    server.stop().await;
}

every_kv_backend! {
    buckets => buckets_and_values;
    conditional => conditional_writes;
    cas_race => cas_race_loses_nothing;
    ttl => history_limits_and_ttl;
}

/// The same bucket name in two environments is two NATS buckets (streams
/// `KV_if_<env>_<bucket>`): neither sees the other's keys, listing or deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_buckets_are_scoped_per_environment() {
    use ironflow::domain::kv::{BucketSettings, KvCondition};
    use ironflow::engine::{Engine, EngineError, EngineOptions, KvBackend, NatsKv};
    use ironflow::ids::EnvId;

    let nats = ironflow_testcontainers::nats().await.expect("nats-server");
    let (store, _url, _guard) = common::fresh_store(Backend::Sqlite).await;
    let kv = NatsKv::connect(&nats.url()).await.expect("connects");
    let engine = Engine::new(
        store,
        EngineOptions {
            kv: KvBackend::Nats(kv),
            ..EngineOptions::default()
        },
    );
    let (a, b) = (EnvId::generate(), EnvId::generate());
    assert_ne!(
        NatsKv::nats_bucket(&a, "shared"),
        NatsKv::nats_bucket(&b, "shared")
    );
    let settings = || BucketSettings {
        name: "shared".into(),
        description: String::new(),
        ttl_seconds: 0,
        max_value_size: 0,
        max_bytes: 0,
        history: 1,
    };
    engine.kv_create_bucket(&a, settings()).await.expect("a");
    let write = |env: EnvId, value: &'static str| {
        let engine = engine.clone();
        async move {
            engine
                .kv_write(
                    &env,
                    "shared",
                    "k",
                    Some(value.as_bytes().to_vec()),
                    KvCondition::None,
                )
                .await
        }
    };
    write(a.clone(), "from-a").await.expect("put in a");
    assert!(matches!(
        engine.kv_bucket(&b, "shared").await,
        Err(EngineError::NotFound { .. })
    ));
    assert!(engine.kv_list_buckets(&b).await.expect("list").is_empty());
    assert!(matches!(
        write(b.clone(), "from-b").await,
        Err(EngineError::NotFound { .. })
    ));
    engine.kv_create_bucket(&b, settings()).await.expect("b");
    write(b.clone(), "from-b").await.expect("put in b");
    let value = |env: EnvId| {
        let engine = engine.clone();
        async move { engine.kv_get(&env, "shared", "k").await.expect("get").value }
    };
    assert_eq!(value(a.clone()).await, b"from-a");
    assert_eq!(value(b.clone()).await, b"from-b");
    let listed = engine.kv_list_buckets(&a).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].settings.name, "shared");
    engine.kv_delete_bucket(&b, "shared").await.expect("delete");
    assert_eq!(value(a.clone()).await, b"from-a", "a's bucket survives");
}

/// `--nats-url` naming no server fails the start with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nats_fails_the_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("dir");
    let options = ironflow::server::ServeOptions {
        bind: "127.0.0.1".parse().expect("ip"),
        port: 0,
        database: ironflow::store::DbOptions::url(dir.path().join("i.db").display().to_string()),
        dev: true,
        bootstrap_key_file: None,
        max_payload_bytes: 1 << 20,
        lease_ttl: Duration::from_secs(90),
        master_key: None,
        nats_url: Some(format!("nats://127.0.0.1:{port}")),
        schema_enforcement: Default::default(),
        projection_lease_ttl: std::time::Duration::from_secs(15),
    };
    let Err(e) = ironflow::server::start(options, None).await else {
        panic!("started without NATS");
    };
    let message = format!("{e:#}");
    assert!(
        message.contains("connecting to NATS at nats://127.0.0.1:"),
        "{message}"
    );
}
