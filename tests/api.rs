//! The HTTP surface on both backends, against a real server on a loopback port: auth,
//! environments, REST and Connect (JSON and gzipped binary proto), bad input, history.

mod common;

use std::io::Write;

use common::{Backend, ServerConfig, TestServer, raw_count};
use ironflow::proto::v1 as pb;
use prost::Message;
use serde_json::{Value, json};

async fn register(server: &TestServer, id: &str, event: &str, expression: Option<&str>) -> Value {
    let mut trigger = json!({"event": event});
    if let Some(e) = expression {
        trigger["expression"] = json!(e);
    }
    let (status, body) = server
        .connect_json(
            "RegisterFunction",
            json!({"id": id, "triggers": [trigger], "preferredMode": "EXECUTION_MODE_PULL"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn emit(server: &TestServer, body: Value) -> (u16, Value) {
    let response = server
        .post("/api/v1/events")
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn auth_is_required(backend: Backend) {
    let server = TestServer::start(backend).await;
    let anonymous = server
        .http
        .get(format!("{}/api/v1/events", server.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.expect("JSON error body");
    assert_eq!(body["code"], "unauthenticated");
    let wrong = server
        .http
        .get(format!("{}/api/v1/runs", server.base))
        .bearer_auth("ifkey_wrong")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let rpc = server
        .http
        .post(format!(
            "{}/ironflow.v1.IronflowService/ListFunctions",
            server.base
        ))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(rpc.status(), 401);
    for open in ["/health", "/ready"] {
        let r = server
            .http
            .get(format!("{}{open}", server.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "{open} needs no key");
    }
    let unknown_env = server
        .get("/api/v1/events")
        .header("x-ironflow-environment", "nope")
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown_env.status(), 404);
    let body: Value = unknown_env.json().await.expect("JSON");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nope"),
        "{body}"
    );
    let by_id_header = server
        .get("/api/v1/events")
        .header("x-ironflow-environment-id", "default")
        .send()
        .await
        .expect("sent");
    assert_eq!(by_id_header.status(), 200);
    server.stop().await;
}

async fn dev_mode_needs_no_key(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            dev: true,
            ..ServerConfig::default()
        },
    )
    .await;
    let r = server
        .http
        .get(format!("{}/api/v1/functions", server.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let health: Value = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        health["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{health}"
    );
    server.stop().await;
}

async fn emit_matches_triggers(backend: Backend) {
    let server = TestServer::start(backend).await;
    register(&server, "exact", "order.created", None).await;
    register(&server, "one", "order.*", None).await;
    register(&server, "rest", "order.>", None).await;
    register(
        &server,
        "big",
        "order.created",
        Some("event.data.amount > 100"),
    )
    .await;
    let cases = [
        (
            "order.created",
            json!({"amount": 50}),
            vec!["exact", "one", "rest"],
        ),
        (
            "order.created",
            json!({"amount": 500}),
            vec!["big", "exact", "one", "rest"],
        ),
        ("order.created.eu", json!({}), vec!["rest"]),
        ("user.signup", json!({}), vec![]),
    ];
    for (name, data, expected) in cases {
        let (status, body) = emit(&server, json!({"name": name, "data": data})).await;
        assert_eq!(status, 200, "{body}");
        let mut functions = Vec::new();
        for run_id in body["run_ids"].as_array().expect("run_ids") {
            let run: Value = server
                .get(&format!("/api/v1/runs/{}", run_id.as_str().expect("id")))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            assert_eq!(run["event_id"], body["event_id"]);
            assert_eq!(run["status"], "running");
            functions.push(run["function_id"].as_str().expect("fn").to_owned());
        }
        functions.sort();
        assert_eq!(functions, expected, "{name} {data}");
    }
    server.stop().await;
}

async fn idempotent_emit(backend: Backend) {
    let server = TestServer::start(backend).await;
    register(&server, "once", "pay.requested", None).await;
    let body = json!({"name": "pay.requested", "data": {"a": 1}, "idempotency_key": "pay-1"});
    let (_, first) = emit(&server, body.clone()).await;
    let (status, second) = emit(&server, body).await;
    assert_eq!(status, 200);
    assert_eq!(first["event_id"], second["event_id"]);
    assert_eq!(first["run_ids"], second["run_ids"]);
    assert_eq!(second["duplicate"], true);
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM events").await,
        1
    );
    assert_eq!(raw_count(&server.url, "SELECT COUNT(*) FROM runs").await, 1);
    server.stop().await;
}

async fn bad_input_is_a_clear_4xx(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            max_payload_bytes: 2048,
            ..ServerConfig::default()
        },
    )
    .await;
    let malformed = server
        .post("/api/v1/events")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.expect("JSON error");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON"),
        "{body}"
    );
    let (status, body) = emit(&server, json!({"name": 5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("'name'"),
        "the field is named: {body}"
    );
    let (status, body) = emit(&server, json!(["name", "data"])).await;
    assert_eq!(status, 400, "an array is not an event: {body}");
    let (status, body) = emit(&server, json!({"name": "order.*", "data": {}})).await;
    assert_eq!(
        status, 400,
        "wildcards are for triggers, not event names: {body}"
    );
    let (status, body) = emit(
        &server,
        json!({"name": "big.one", "data": {"blob": "x".repeat(4000)}}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "resource_exhausted");
    let huge = server
        .post("/api/v1/events")
        .header("content-type", "application/json")
        .body(json!({"name": "huge", "data": "y".repeat(200_000)}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(huge.status(), 413);
    assert!(
        huge.json::<Value>().await.is_ok(),
        "the 413 has a JSON body"
    );
    let bad_cursor = server
        .get("/api/v1/events?cursor=garbage!")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_cursor.status(), 400);
    let bad_time = server
        .get("/api/v1/runs?since=yesterday")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_time.status(), 400);
    let bad_status = server
        .get("/api/v1/runs?status=exploded")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_status.status(), 400);
    let bad_limit = server
        .get("/api/v1/events?limit=abc")
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_limit.status(), 400);
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM events").await,
        0,
        "nothing was written"
    );

    for (def, needle) in [
        (json!({"id": "", "triggers": [{"event": "a"}]}), "id"),
        (
            json!({"id": "f", "triggers": [{"event": "order..created"}]}),
            "triggers[0]",
        ),
        (
            json!({"id": "f", "triggers": [{"event": "order.>.x"}]}),
            "triggers[0]",
        ),
        (
            json!({"id": "f", "triggers": [{"event": "a", "expression": "event.data.amount >"}]}),
            "CEL",
        ),
        (
            json!({"id": "f", "preferredMode": "EXECUTION_MODE_PUSH", "endpointUrl": "ftp://x"}),
            "endpoint_url",
        ),
        (json!({"id": "f", "timeoutMs": "soon"}), "JSON"),
    ] {
        let (status, body) = server.connect_json("RegisterFunction", def.clone()).await;
        assert_eq!(status, 400, "{def} → {body}");
        assert_eq!(body["code"], "invalid_argument");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{def} → {body}"
        );
    }
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM functions").await,
        0
    );
    let unknown = server
        .get("/api/v1/runs/01a2014c-26d3-76c6-8a2b-9f204111aa63")
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 404);
    let (status, body) = server.connect_json("NoSuchMethod", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unimplemented"))
    );
    server.stop().await;
}

async fn connect_binary_gzip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let request = pb::RegisterFunctionRequest {
        id: "proto-fn".into(),
        triggers: vec![pb::Trigger {
            event: "proto.*".into(),
            ..pb::Trigger::default()
        }],
        preferred_mode: pb::ExecutionMode::Pull as i32,
        ..pb::RegisterFunctionRequest::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&request.encode_to_vec()).expect("gzip");
    let body = gz.finish().expect("gzip");
    let response = server
        .post("/ironflow.v1.IronflowService/RegisterFunction")
        .header("content-type", "application/proto")
        .header("content-encoding", "gzip")
        .header("connect-protocol-version", "1")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/proto");
    let decoded =
        pb::RegisterFunctionResponse::decode(response.bytes().await.expect("body")).expect("proto");
    assert!(decoded.created);
    assert_eq!(decoded.function.expect("function").version, 1);

    let emit = pb::TriggerRequest {
        event: "proto.hit".into(),
        ..pb::TriggerRequest::default()
    };
    let response = server
        .post("/ironflow.v1.IronflowService/Emit")
        .header("content-type", "application/proto")
        .body(emit.encode_to_vec())
        .send()
        .await
        .expect("sent");
    let emitted =
        pb::TriggerResponse::decode(response.bytes().await.expect("body")).expect("proto");
    assert_eq!(emitted.run_ids.len(), 1);
    let run = pb::GetRunRequest {
        id: emitted.run_ids[0].clone(),
    };
    let response = server
        .post("/ironflow.v1.IronflowService/GetRun")
        .header("content-type", "application/proto")
        .body(run.encode_to_vec())
        .send()
        .await
        .expect("sent");
    let run = pb::Run::decode(response.bytes().await.expect("body")).expect("proto");
    assert_eq!(run.function_id, "proto-fn");
    assert_eq!(run.status, pb::RunStatus::Running as i32);
    assert_eq!(run.event_name, "proto.hit");
    server.stop().await;
}

async fn connect_json_accepts_both_casings(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, camel) = server
        .connect_json("RegisterFunction", json!({"id": "cased", "triggers": [{"event": "c.a"}], "timeoutMs": 3000, "metadata": {"__ironflow_code_hash": "aaa"}}))
        .await;
    assert_eq!(status, 200, "{camel}");
    assert_eq!(camel["function"]["version"], 1);
    assert_eq!(camel["created"], true);
    assert_eq!(camel["function"]["preferredMode"], "EXECUTION_MODE_PULL");
    let (status, snake) = server
        .connect_json("RegisterFunction", json!({"id": "cased", "triggers": [{"event": "c.a"}], "timeout_ms": 3000, "metadata": {"__ironflow_code_hash": "aaa"}}))
        .await;
    assert_eq!(status, 200, "{snake}");
    assert_eq!(
        snake["function"]["version"], 1,
        "same definition in snake_case is not a new version"
    );
    assert!(snake.get("created").is_none() || snake["created"] == false);
    let (_, changed) = server
        .connect_json("RegisterFunction", json!({"id": "cased", "triggers": [{"event": "c.a"}], "timeout_ms": 3000, "metadata": {"__ironflow_code_hash": "bbb"}}))
        .await;
    assert_eq!(
        changed["function"]["version"], 2,
        "a new code hash is a new version"
    );
    let (_, emitted) = server
        .connect_json("Emit", json!({"event": "c.a", "data": {"x": 1}}))
        .await;
    let run_id = emitted["runIds"][0].as_str().expect("a run").to_owned();
    let (_, run) = server.connect_json("GetRun", json!({"id": run_id})).await;
    assert_eq!(
        run["functionVersion"], 2,
        "runs record the version they started on"
    );
    let (_, runs) = server
        .connect_json(
            "ListRuns",
            json!({"functionId": "cased", "statuses": ["RUN_STATUS_RUNNING"]}),
        )
        .await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1));
    let (status, cancelled) = server
        .connect_json("CancelRun", json!({"id": run_id, "reason": "test"}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "RUN_STATUS_CANCELLED");
    let history: Value = server
        .get_json(&format!("/api/v1/runs/{run_id}/history"))
        .await;
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["run.created", "run.status_changed", "run.cancelled"]
    );
    let (_, steps) = server
        .connect_json("GetRunSteps", json!({"runId": run_id}))
        .await;
    assert!(
        steps
            .get("steps")
            .is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)),
        "{steps}"
    );
    let (_, info) = server.connect_json("Info", json!({})).await;
    assert_eq!(info["functionCount"], 1);
    let (_, health) = server.connect_json("Health", json!({})).await;
    assert_eq!(health["status"], "ok");
    server.stop().await;
}

async fn lists_page_with_cursors(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..5 {
        emit(&server, json!({"name": "page.item", "data": {"i": i}})).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=2&cursor={c}"),
            None => "/api/v1/events?limit=2".to_owned(),
        };
        let page: Value = server.get_json(&path).await;
        seen.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["data"]["i"].as_i64().expect("i")),
        );
        if page["has_next"] != true {
            break;
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, vec![4, 3, 2, 1, 0]);
    let names: Value = server.get_json("/api/v1/events/names").await;
    assert_eq!(names["names"][0], json!({"name": "page.item", "count": 5}));
    server.stop().await;
}

both_backends! {
    auth => auth_is_required;
    dev_mode => dev_mode_needs_no_key;
    triggers => emit_matches_triggers;
    idempotency => idempotent_emit;
    bad_input => bad_input_is_a_clear_4xx;
    connect_proto => connect_binary_gzip;
    connect_json => connect_json_accepts_both_casings;
    paging => lists_page_with_cursors;
}

/// A viewer key reads but cannot write: 403 with a JSON body naming the role.
async fn viewer_keys_are_read_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .create_key(json!({"name": "viewer", "role_ids": ["viewer"]}))
        .await;
    let secret = created["key"].as_str().expect("secret");
    let read = server
        .http
        .get(format!("{}/api/v1/events", server.base))
        .bearer_auth(secret)
        .send()
        .await
        .expect("sent");
    assert_eq!(read.status(), 200);
    let write = server
        .http
        .post(format!("{}/api/v1/events", server.base))
        .bearer_auth(secret)
        .json(&json!({"name": "not.allowed"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(write.status(), 403);
    let body: Value = write.json().await.expect("JSON");
    assert_eq!(body["code"], "permission_denied");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("viewer"),
        "{body}"
    );
    assert_eq!(
        raw_count(&server.url, "SELECT COUNT(*) FROM events").await,
        0
    );
    server.stop().await;
}

both_backends! {
    viewer_read_only => viewer_keys_are_read_only;
}
