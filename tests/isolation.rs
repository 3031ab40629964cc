//! Isolation, proven on both backends. Every REST route (from the router's own table) and every
//! Connect method (from the compiled descriptors, also with the method name percent-encoded) is
//! called with (a) no key → 401, (b) a key of another project naming our environment → 404,
//! (c) a viewer key → 403 for anything the viewer role does not grant, (d) a key whose every
//! action a deny policy forbids → 403; none of them writes anything. Then the data paths: secrets, subscriptions, consumer groups and
//! workers stay inside their environment.

mod common;

use std::time::Duration;

use common::ws::{connect_to, next_frame, send};
use common::{
    Backend, FakeWorker, ServerConfig, TestServer, connect_methods, fill, foreign_project,
    table_counts,
};
use ironflow::api::{Access, connect_permission, routes};
use ironflow::domain::authz::{BuiltinRole, Permission};
use serde_json::{Value, json};

/// Who calls, and what it must be answered for a call needing `permission`.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Nobody,
    OtherProject,
    Viewer,
    DeniedByPolicy,
}

fn expected(caller: Caller, permission: Option<Permission>) -> Option<u16> {
    match (caller, permission) {
        (Caller::Nobody, _) => Some(401),
        (_, None) => None,
        // Our environment does not exist for it, organisation routes included.
        (Caller::OtherProject, Some(_)) => Some(404),
        (Caller::Viewer, Some(p)) => {
            (!BuiltinRole::Viewer.permissions().contains(p)).then_some(403)
        }
        (Caller::DeniedByPolicy, Some(_)) => Some(403),
    }
}

struct Walk {
    http: reqwest::Client,
    base: String,
    env_id: String,
    keys: Vec<(Caller, Option<String>)>,
    failures: Vec<String>,
    calls: usize,
}

impl Walk {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        websocket: bool,
        permission: Option<Permission>,
    ) {
        for (caller, key) in self.keys.clone() {
            let Some(want) = expected(caller, permission) else {
                continue;
            };
            let mut request = self
                .http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    format!("{}{path}", self.base),
                )
                .header("x-ironflow-environment-id", &self.env_id);
            if websocket {
                request = request
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            } else {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            if let Some(key) = &key {
                request = request.bearer_auth(key);
            }
            self.calls += 1;
            let status = match request.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    self.failures
                        .push(format!("{caller:?} {method} {path}: {e}"));
                    continue;
                }
            };
            if status != want {
                self.failures.push(format!(
                    "{caller:?} {method} {path} ({permission:?}): {status}, expected {want}"
                ));
            }
        }
    }
}

async fn every_route_refuses_outsiders(backend: Backend) {
    let server = TestServer::start(backend).await;
    let envs = server.get_json("/api/v1/environments").await;
    let env_id = envs[0]["id"].as_str().expect("our environment").to_owned();
    let viewer = server
        .create_key(json!({"name": "viewer", "role_ids": ["viewer"]}))
        .await;
    let denied = server
        .create_key(json!({"name": "denied", "role_ids": ["admin"]}))
        .await;
    let policy = server
        .http
        .put(format!("{}/api/v1/policy-set", server.base))
        .bearer_auth(&server.key)
        .header("if-match", "0")
        .json(&json!({"modules": {
            "deny-probe": format!("principal.id == '{}'", denied["id"].as_str().expect("id"))
        }}))
        .send()
        .await
        .expect("policy saved");
    assert_eq!(policy.status(), 200, "{:?}", policy.text().await);
    let (_, other) = foreign_project(&server, "developer").await;

    let mut walk = Walk {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client"),
        base: server.base.clone(),
        env_id,
        keys: vec![
            (Caller::Nobody, None),
            (Caller::OtherProject, Some(other)),
            (
                Caller::Viewer,
                Some(viewer["key"].as_str().expect("key").to_owned()),
            ),
            (
                Caller::DeniedByPolicy,
                Some(denied["key"].as_str().expect("key").to_owned()),
            ),
        ],
        failures: Vec::new(),
        calls: 0,
    };
    let before = table_counts(&server.url).await;
    for route in routes() {
        let permission = match route.access {
            Access::Public => continue,
            Access::Key(p) => Some(p),
            // Connect services are walked below, method by method.
            Access::Service => continue,
            Access::KeyInHandler => match route.path {
                "/ws" => Some(Permission::TopicsSubscribe),
                "/api/v1/kv/buckets/{bucket}/watch" => Some(Permission::KvRead),
                "/api/v1/config/{name}/watch" => Some(Permission::ConfigRead),
                // The unknown-service catch-all: authentication only.
                _ => None,
            },
        };
        let websocket = route.path.ends_with("watch") || route.path == "/ws";
        walk.call(
            route.method.as_str(),
            &fill(route.path, "probe"),
            websocket,
            permission,
        )
        .await;
    }
    let methods: Vec<(String, String)> = connect_methods()
        .into_iter()
        .map(|(service, method, _)| {
            let short = service.trim_start_matches("ironflow.v1.").to_owned();
            (short, method)
        })
        .collect();
    assert!(methods.len() > 60, "the descriptors list our methods");
    for (service, method) in methods {
        let permission = connect_permission(&service, &method);
        walk.call(
            "POST",
            &format!("/ironflow.v1.{service}/{method}"),
            false,
            permission,
        )
        .await;
        // The same method with its first letter percent-encoded: the router decodes it, and so
        // must the decision.
        let (first, rest) = method.split_at(1);
        let encoded = format!("/ironflow.v1.{service}/%{:02X}{rest}", first.as_bytes()[0]);
        walk.call("POST", &encoded, false, permission).await;
    }
    assert!(walk.failures.is_empty(), "{:#?}", walk.failures);
    assert_eq!(
        table_counts(&server.url).await,
        before,
        "nothing was written"
    );
    println!("isolation: {} calls refused as documented", walk.calls);

    // Each refusal by role or policy is in the audit log, naming who and why.
    let audit = server
        .get_json(&format!(
            "/api/v1/audit?api_key_id={}&limit=5",
            denied["id"].as_str().expect("id")
        ))
        .await;
    let entry = &audit["events"][0];
    assert_eq!(entry["payload"]["outcome"], "denied", "{audit}");
    assert!(
        entry["payload"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deny-probe")),
        "{entry}"
    );
    server.stop().await;
}

/// A second environment of our project and a developer key scoped to it.
async fn second_environment(server: &TestServer, name: &str) -> (String, String) {
    let created: Value = server
        .post("/api/v1/environments")
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let env = created["id"].as_str().expect("env id").to_owned();
    let key = server
        .create_key(json!({"name": name, "env_id": env, "role_ids": ["developer"]}))
        .await;
    (env, key["key"].as_str().expect("key").to_owned())
}

async fn data_stays_in_its_environment(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            master_key: Some(
                ironflow::domain::secret::MasterKey::parse(&"7".repeat(64)).expect("key"),
            ),
            ..Default::default()
        },
    )
    .await;
    let (_, staging) = second_environment(&server, "staging").await;
    let http = reqwest::Client::new();
    let as_staging = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", server.base))
            .bearer_auth(&staging)
    };

    // Secrets: created in `default`, unknown in `staging`.
    let created = server
        .post("/api/v1/secrets")
        .json(&json!({"name": "db-password", "value": "hunter2"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let there = as_staging(reqwest::Method::GET, "/api/v1/secrets/db-password")
        .send()
        .await
        .expect("sent");
    assert_eq!(there.status(), 404);
    let listed: Value = as_staging(reqwest::Method::GET, "/api/v1/secrets")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed, json!([]), "staging sees no secret of default");
    // A key scoped to staging cannot name default.
    let scoped = as_staging(reqwest::Method::GET, "/api/v1/secrets")
        .header("x-ironflow-environment", "default")
        .send()
        .await
        .expect("sent");
    assert_eq!(scoped.status(), 403);

    // Subscriptions and consumer groups: a subscriber in default gets default's messages only.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut subscriber = connect_to(&addr, &server.key).await;
    send(
        &mut subscriber,
        json!({"type": "subscribe", "subscription": {"pattern": "orders.*"}}),
    )
    .await;
    next_frame(&mut subscriber).await;
    let mut member = connect_to(&addr, &server.key).await;
    send(
        &mut member,
        json!({"type": "subscribe", "subscription": {"pattern": "orders.*",
               "options": {"consumerGroup": "billing", "ackMode": "auto"}}}),
    )
    .await;
    next_frame(&mut member).await;
    let publish = |key: String, n: i64| {
        let http = http.clone();
        let base = server.base.clone();
        async move {
            let r = http
                .post(format!("{base}/ironflow.v1.PubSubService/Publish"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(json!({"topic": "orders.placed", "data": {"n": n}}).to_string())
                .send()
                .await
                .expect("sent");
            assert_eq!(r.status(), 200);
        }
    };
    // Interleaved: another environment's message published between ours would arrive between.
    publish(staging.clone(), -1).await;
    publish(server.key.clone(), 1).await;
    publish(staging.clone(), -2).await;
    publish(server.key.clone(), 2).await;
    for socket in [&mut subscriber, &mut member] {
        for n in [1, 2] {
            let frame = next_frame(socket).await;
            assert_eq!(frame["data"]["n"], n, "only default's messages: {frame}");
        }
    }

    // Workers: staging's worker is never handed default's job.
    server
        .register_function(json!({"id": "ship", "triggers": [{"event": "ship.go"}]}))
        .await;
    server.emit_runs("ship.go", json!({})).await;
    let outsider = FakeWorker::register_at(&server.base, &staging, "w-staging", &["ship"]).await;
    assert!(
        outsider.poll(1, 0).await.is_empty(),
        "staging's worker got default's job"
    );
    let owner = FakeWorker::register(&server, "w-default", &["ship"]).await;
    let job = owner.next_job().await;
    assert_eq!(
        job["function_id"], "ship",
        "the job was there all along: {job}"
    );
    server.stop().await;
}

both_backends! {
    every_route => every_route_refuses_outsiders;
    data => data_stays_in_its_environment;
}
