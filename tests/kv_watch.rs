//! KV and config watches over WebSocket (`/api/v1/kv/buckets/{b}/watch`,
//! `/api/v1/config/{name}/watch`) as ironflow-py's `watch_kv` / `watch_config` read them, on
//! SQLite, Postgres and NATS: the current values first, then every put and delete in revision
//! order without gaps (a burst from concurrent writers included), key filters, handshake
//! errors, and a watch on one node seeing writes made on another node of the same Postgres.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use common::kv::{Setup, start};
use common::ws::{Socket, next_frame};
use common::{Backend, TestServer};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens a watch with the Bearer header (as the SDK does); `Err(status)` if refused.
async fn open(base: &str, key: &str, path: &str) -> Result<Socket, u16> {
    let url = format!("ws://{}{path}", base.trim_start_matches("http://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("watch connection failed: {e}"),
    }
}

async fn watch(server: &TestServer, path: &str) -> Socket {
    open(&server.base, &server.key, path)
        .await
        .expect("watch opens")
}

async fn create_bucket(server: &TestServer, body: Value) {
    let r = server
        .post("/api/v1/kv/buckets")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 201);
}

/// PUT (value) or DELETE (`None`) a key at `base`; the write's revision (0 for a delete).
async fn write(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    bucket: &str,
    k: &str,
    value: Option<&str>,
) -> i64 {
    let url = format!("{base}/api/v1/kv/buckets/{bucket}/keys/{k}");
    let r = match value {
        Some(v) => http.put(&url).body(v.to_owned()),
        None => http.delete(&url),
    }
    .bearer_auth(key)
    .send()
    .await
    .expect("sent");
    assert!(r.status().is_success(), "{}", r.status());
    r.json::<Value>()
        .await
        .ok()
        .and_then(|v| v["revision"].as_i64())
        .unwrap_or(0)
}

fn value_of(frame: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(frame["value"].as_str().expect("value"))
        .expect("base64");
    String::from_utf8(bytes).expect("utf8")
}

async fn puts_and_deletes_in_order(setup: Setup) {
    let server = start(setup).await;
    create_bucket(&server, json!({"name": "profiles", "history": 10})).await;
    let seed = write(
        &server.http,
        &server.base,
        &server.key,
        "profiles",
        "seed",
        Some("0"),
    )
    .await;
    let mut socket = watch(&server, "/api/v1/kv/buckets/profiles/watch").await;
    let first = next_frame(&mut socket).await;
    assert_eq!(first["type"], "kv_update");
    assert_eq!(first["bucket"], "profiles");
    assert_eq!(first["key"], "seed", "the current values come first");
    assert_eq!(first["revision"], seed);
    assert_eq!(first["operation"], "put");

    let put = write(
        &server.http,
        &server.base,
        &server.key,
        "profiles",
        "user.1",
        Some("{\"n\":1}"),
    )
    .await;
    write(
        &server.http,
        &server.base,
        &server.key,
        "profiles",
        "user.1",
        None,
    )
    .await;
    let frame = next_frame(&mut socket).await;
    assert_eq!(
        (frame["key"].as_str(), frame["revision"].as_i64()),
        (Some("user.1"), Some(put))
    );
    assert_eq!(value_of(&frame), "{\"n\":1}");
    let deleted = next_frame(&mut socket).await;
    assert_eq!(deleted["operation"], "delete");
    assert_eq!(deleted["key"], "user.1");
    assert_eq!(deleted["value"], "", "a delete carries an empty value");
    assert!(deleted["revision"].as_i64() > Some(put));

    // A burst: 8 writers, 25 puts each, then a delete of each of their keys.
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, base, key) = (server.http.clone(), server.base.clone(), server.key.clone());
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..25 {
                let k = format!("burst.{w}.{i}");
                revisions
                    .push(write(&http, &base, &key, "profiles", &k, Some(&i.to_string())).await);
            }
            revisions
        }));
    }
    let mut expected = BTreeSet::new();
    for w in writers {
        expected.extend(w.await.expect("writer"));
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["operation"], "put");
        seen.push(frame["revision"].as_i64().expect("revision"));
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in revision order: {seen:?}"
    );
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        expected,
        "no gaps"
    );
    for w in 0..8 {
        write(
            &server.http,
            &server.base,
            &server.key,
            "profiles",
            &format!("burst.{w}.0"),
            None,
        )
        .await;
    }
    for w in 0..8 {
        let frame = next_frame(&mut socket).await;
        assert_eq!(frame["operation"], "delete");
        assert_eq!(frame["key"], format!("burst.{w}.0"));
    }
    server.stop().await;
}

async fn key_filter_and_handshake_errors(setup: Setup) {
    let server = start(setup).await;
    create_bucket(&server, json!({"name": "mixed"})).await;
    let mut socket = watch(&server, "/api/v1/kv/buckets/mixed/watch?key=user.*").await;
    for k in ["order.1", "user.1", "user.2.deep", "user.2"] {
        write(
            &server.http,
            &server.base,
            &server.key,
            "mixed",
            k,
            Some("x"),
        )
        .await;
    }
    assert_eq!(next_frame(&mut socket).await["key"], "user.1");
    assert_eq!(next_frame(&mut socket).await["key"], "user.2");
    assert_eq!(
        open(&server.base, &server.key, "/api/v1/kv/buckets/nope/watch")
            .await
            .err(),
        Some(404),
        "an unknown bucket is refused at the handshake"
    );
    assert_eq!(
        open(
            &server.base,
            &server.key,
            "/api/v1/kv/buckets/mixed/watch?key=a..b"
        )
        .await
        .err(),
        Some(400)
    );
    assert_eq!(
        open(
            &server.base,
            "ifkey_wrong",
            "/api/v1/kv/buckets/mixed/watch"
        )
        .await
        .err(),
        Some(401)
    );
    let anonymous = format!(
        "ws://{}/api/v1/kv/buckets/mixed/watch",
        server.base.trim_start_matches("http://")
    );
    assert!(tokio_tungstenite::connect_async(anonymous).await.is_err());
    server.stop().await;
}

every_kv_backend! {
    in_order => puts_and_deletes_in_order;
    filters => key_filter_and_handshake_errors;
}

/// Deleting the bucket ends its watches with an error frame.
async fn deleted_bucket_ends_the_watch(backend: Backend) {
    let server = TestServer::start(backend).await;
    create_bucket(&server, json!({"name": "doomed"})).await;
    let mut socket = watch(&server, "/api/v1/kv/buckets/doomed/watch").await;
    let r = server
        .http
        .delete(format!("{}/api/v1/kv/buckets/doomed", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 204);
    // The write after the deletion fails; the watcher notices at its next read.
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(
        frame["message"]
            .as_str()
            .unwrap_or_default()
            .contains("doomed"),
        "{frame}"
    );
    server.stop().await;
}

async fn config_updates_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let set = |body: Value| server.post("/api/v1/config/app").json(&body).send();
    assert!(
        set(json!({"mode": "a"}))
            .await
            .expect("sent")
            .status()
            .is_success()
    );
    let mut socket = watch(&server, "/api/v1/config/app/watch").await;
    let first = next_frame(&mut socket).await;
    assert_eq!(first["type"], "config_update");
    assert_eq!(first["name"], "app");
    assert_eq!(
        first["data"],
        json!({"mode": "a"}),
        "the current document first"
    );
    assert_eq!(first["revision"], 1);
    assert!(first["updatedAt"].as_str().is_some());
    for mode in ["b", "c", "d"] {
        assert!(
            set(json!({"mode": mode}))
                .await
                .expect("sent")
                .status()
                .is_success()
        );
    }
    let patched = server
        .http
        .patch(format!("{}/api/v1/config/app", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"extra": true}))
        .send()
        .await
        .expect("sent");
    assert!(patched.status().is_success());
    for (revision, data) in [
        (2, json!({"mode": "b"})),
        (3, json!({"mode": "c"})),
        (4, json!({"mode": "d"})),
        (5, json!({"mode": "d", "extra": true})),
    ] {
        let frame = next_frame(&mut socket).await;
        assert_eq!(
            (frame["revision"].as_i64(), &frame["data"]),
            (Some(revision), &data)
        );
    }
    let deleted = server
        .http
        .delete(format!("{}/api/v1/config/app", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("sent");
    assert!(deleted.status().is_success());
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["data"], Value::Null);
    assert_eq!(frame["operation"], "delete");
    server.stop().await;
}

both_backends! {
    deleted_bucket => deleted_bucket_ends_the_watch;
    config => config_updates_in_order;
}

/// Two nodes on one Postgres: a watch on the second sees the first's writes, in order,
/// woken by NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_another_node() {
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.second_node().await;
    let second_base = format!("http://{}", second.local_addr);
    create_bucket(&first, json!({"name": "shared"})).await;
    let mut socket = open(&second_base, &first.key, "/api/v1/kv/buckets/shared/watch")
        .await
        .expect("watch on the second node");
    let mut revisions = Vec::new();
    for i in 0..30 {
        let k = format!("k.{}", i % 7);
        revisions.push(
            write(
                &first.http,
                &first.base,
                &first.key,
                "shared",
                &k,
                Some(&i.to_string()),
            )
            .await,
        );
    }
    for (i, revision) in revisions.into_iter().enumerate() {
        let frame = tokio::time::timeout(Duration::from_secs(15), next_frame(&mut socket))
            .await
            .expect("frame");
        assert_eq!(frame["revision"].as_i64(), Some(revision));
        assert_eq!(value_of(&frame), i.to_string());
    }
    second.shutdown.cancel();
    second.wait().await.expect("second stops");
    first.stop().await;
}
