//! Fuzzing every route, on both backends. The REST routes come from the router's own table
//! (`ironflow::api::routes()`) and the Connect methods from the compiled proto descriptors, so
//! a new route or method is covered without editing this file. Each gets malformed input of
//! every kind: invalid JSON and UTF-8, wrong top-level types, unknown, missing and mistyped
//! fields, huge and deeply nested values, U+0000, huge numbers, bad content types, oversized
//! bodies, gzip bombs, bad path parameters and query strings, no key. The server must never
//! answer 5xx, every error must be the documented JSON body, the server must stay alive, and
//! input that has to be refused must write nothing. The counts are printed (`fuzz: {…}`).

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{Backend, ServerConfig, TestServer, connect_methods, fill, table_counts};
use ironflow::api::{Access, routes};
use serde_json::{Value, json};

/// Path parameter values every route must refuse (400), writing nothing.
const BAD_PARAMS: [&str; 3] = ["%00", "%FF%FE", "a%00b"];
/// Odd but well-formed values: answered with anything but a 5xx.
fn odd_params() -> Vec<String> {
    vec![
        "fuzz".into(),
        "..".into(),
        "%2F".into(),
        "%C3%BC%E2%9C%93".into(),
        "-1".into(),
        "%20".into(),
        "x".repeat(2000),
    ]
}

const MAX_PAYLOAD: usize = 16 * 1024;

#[derive(Default)]
struct Tally {
    requests: usize,
    unimplemented: usize,
    server_errors: Vec<String>,
    non_json_errors: Vec<String>,
    writes_on_refusal: Vec<String>,
}

impl Tally {
    fn summary(&self) -> Value {
        json!({
            "requests": self.requests,
            "unimplemented_501": self.unimplemented,
            "server_errors": self.server_errors.len(),
            "non_json_errors": self.non_json_errors.len(),
            "writes_on_refusal": self.writes_on_refusal.len(),
        })
    }
}

/// A request and what the answer may be.
struct Probe {
    what: String,
    method: reqwest::Method,
    path: String,
    key: bool,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    body: Vec<u8>,
}

async fn send(
    server: &TestServer,
    http: &reqwest::Client,
    probe: &Probe,
    tally: &mut Tally,
) -> Option<u16> {
    let mut request = http.request(
        probe.method.clone(),
        format!("{}{}", server.base, probe.path),
    );
    if probe.key {
        request = request.bearer_auth(&server.key);
    }
    if let Some(ct) = probe.content_type {
        request = request.header("content-type", ct);
    }
    if let Some(ce) = probe.content_encoding {
        request = request.header("content-encoding", ce);
    }
    tally.requests += 1;
    let response = match request.body(probe.body.clone()).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            // A stream that stays open (a valid subscription) is not a failure of the server.
            return None;
        }
        Err(e) => {
            tally
                .server_errors
                .push(format!("{}: transport error {e}", probe.what));
            return None;
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // `unimplemented` is Connect's answer for a method this server does not serve yet (HTTP
    // 501 by the protocol's table); it is counted apart, not as a server error.
    let unimplemented = status == 501
        && serde_json::from_slice::<Value>(&body).is_ok_and(|b| b["code"] == "unimplemented");
    if unimplemented {
        tally.unimplemented += 1;
    } else if status >= 500 {
        tally.server_errors.push(format!(
            "{}: {status} {}",
            probe.what,
            String::from_utf8_lossy(&body)
        ));
    }
    if status >= 400 {
        let json_body = content_type.starts_with("application/json")
            && serde_json::from_slice::<Value>(&body)
                .is_ok_and(|b| b["code"].is_string() && b["message"].is_string());
        if !json_body {
            tally.non_json_errors.push(format!(
                "{}: {status} {content_type} {}",
                probe.what,
                String::from_utf8_lossy(&body)
            ));
        }
    }
    Some(status)
}

/// A Connect request body: what it is, its content type and encoding, its bytes.
type ConnectBody = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Vec<u8>,
);

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// JSON bodies every JSON-reading route must refuse, and must write nothing for.
fn refused_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    vec![
        ("invalid JSON", Some("application/json"), b"{\"name\": ".to_vec()),
        ("invalid UTF-8", Some("application/json"), vec![0xFF, 0xFE, b'{', b'}']),
        (
            "U+0000",
            Some("application/json"),
            br#"{"name":"a\u0000","id":"a\u0000","data":{"s":"\u0000"},"topic":"\u0000","hostname":"\u0000","value":"\u0000"}"#.to_vec(),
        ),
        ("deep nesting", Some("application/json"), deep.into_bytes()),
        ("huge number", Some("application/json"), br#"{"name":"a","data":{"n":1e999},"value":1e999}"#.to_vec()),
        ("an array", Some("application/json"), b"[1,2,3]".to_vec()),
        ("a number", Some("application/json"), b"42".to_vec()),
        ("a string", Some("application/json"), b"\"s\"".to_vec()),
        ("null", Some("application/json"), b"null".to_vec()),
        ("over the size limit", Some("application/json"), vec![b' '; MAX_PAYLOAD + 128 * 1024]),
    ]
}

/// Bodies that may be accepted or refused; never a 5xx.
fn other_bodies() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let wrong_types = json!({
        "name": 5, "id": [], "data": "x", "function_ids": "f", "limit": -1, "hostname": {},
        "triggers": "t", "value": {"a": [1, {"b": null}]}, "pattern": 3, "status": 7,
        "execution_seq": "x", "lease_token": 1, "steps": {}, "jobs": "j", "reason": []
    });
    let big_string = json!({"name": "n".repeat(4000), "data": {"s": "ü".repeat(3000)}});
    vec![
        ("empty object", Some("application/json"), b"{}".to_vec()),
        (
            "unknown fields",
            Some("application/json"),
            br#"{"zzz": 1, "__proto__": {}}"#.to_vec(),
        ),
        (
            "wrong field types",
            Some("application/json"),
            wrong_types.to_string().into_bytes(),
        ),
        (
            "long strings",
            Some("application/json"),
            big_string.to_string().into_bytes(),
        ),
        (
            "huge integer",
            Some("application/json"),
            br#"{"limit": 99999999999999999999, "max_concurrent_jobs": 99999999999}"#.to_vec(),
        ),
        ("text/plain", Some("text/plain"), b"hello".to_vec()),
        ("no content type", None, b"{}".to_vec()),
        ("empty body", Some("application/json"), Vec::new()),
    ]
}

fn queries() -> Vec<&'static str> {
    vec![
        "?limit=-1",
        "?limit=99999999999999999999",
        "?cursor=%00",
        "?cursor=not-a-cursor",
        "?since=yesterday&until=1e99",
        "?status=bogus,%00",
        "?available=-5&wait=1",
        "?limit=1&limit=2",
        "?%FF=%FE",
        "?before=x&names=,,,",
    ]
}

fn method_of(m: &axum::http::Method) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_str().as_bytes()).expect("method")
}

async fn assert_alive(server: &TestServer, http: &reqwest::Client, after: &str) {
    let health = http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the server died after {after}: {e}"));
    assert_eq!(health.status(), 200, "unhealthy after {after}");
}

async fn fuzz_every_route(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            max_payload_bytes: MAX_PAYLOAD,
            ..ServerConfig::default()
        },
    )
    .await;
    // Something to find: a function, an event, a bucket.
    server
        .register_function(json!({"id": "fuzz", "triggers": [{"event": "fuzz.go"}]}))
        .await;
    server.emit_runs("fuzz.go", json!({})).await;
    // A fresh connection per request: a server that refuses an oversized upload closes the
    // connection without reading the rest, which would otherwise break the next request on it.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut tally = Tally::default();
    let all = routes();
    assert!(all.len() > 40, "the route table lists the router's routes");

    for route in &all {
        let method = method_of(&route.method);
        let has_params = route.path.contains('{');
        let takes_body = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
        let before = table_counts(&server.url).await;

        // Refused input: bad path parameters, and bodies no JSON route can take.
        if has_params {
            for bad in BAD_PARAMS {
                let probe = Probe {
                    what: format!("{} {} with param {bad}", route.method, route.path),
                    method: method.clone(),
                    path: fill(route.path, bad),
                    key: true,
                    content_type: Some("application/json"),
                    content_encoding: None,
                    body: br#"{"name":"a","data":{}}"#.to_vec(),
                };
                if let Some(status) = send(&server, &http, &probe, &mut tally).await {
                    assert!((400..500).contains(&status), "{}: {status}", probe.what);
                }
            }
        }
        if takes_body && !route.path.starts_with("/ironflow.v1.") {
            for (what, content_type, body) in refused_bodies() {
                let probe = Probe {
                    what: format!("{} {} with {what}", route.method, route.path),
                    method: method.clone(),
                    path: fill(route.path, "fuzz"),
                    key: true,
                    content_type,
                    content_encoding: None,
                    body,
                };
                send(&server, &http, &probe, &mut tally).await;
            }
        }
        let after = table_counts(&server.url).await;
        if after != before {
            tally.writes_on_refusal.push(format!(
                "{} {}: {before:?} → {after:?}",
                route.method, route.path
            ));
        }

        // Input that may be taken: never a 5xx, errors in JSON.
        if route.path.starts_with("/ironflow.v1.") {
            continue; // the Connect methods are walked below, by name
        }
        for value in odd_params() {
            let probe = Probe {
                what: format!("{} {} with param {:.40}", route.method, route.path, value),
                method: method.clone(),
                path: fill(route.path, &value),
                key: true,
                content_type: Some("application/json"),
                content_encoding: None,
                body: b"{}".to_vec(),
            };
            send(&server, &http, &probe, &mut tally).await;
        }
        if takes_body {
            for (what, content_type, body) in other_bodies() {
                let probe = Probe {
                    what: format!("{} {} with {what}", route.method, route.path),
                    method: method.clone(),
                    path: fill(route.path, "fuzz"),
                    key: true,
                    content_type,
                    content_encoding: None,
                    body,
                };
                send(&server, &http, &probe, &mut tally).await;
            }
        } else {
            for query in queries() {
                let probe = Probe {
                    what: format!("{} {}{query}", route.method, route.path),
                    method: method.clone(),
                    path: format!("{}{query}", fill(route.path, "fuzz")),
                    key: true,
                    content_type: None,
                    content_encoding: None,
                    body: Vec::new(),
                };
                send(&server, &http, &probe, &mut tally).await;
            }
        }
        let unauthenticated = Probe {
            what: format!("{} {} without a key", route.method, route.path),
            method: method.clone(),
            path: fill(route.path, "fuzz"),
            key: false,
            content_type: Some("application/json"),
            content_encoding: None,
            body: b"{}".to_vec(),
        };
        let status = send(&server, &http, &unauthenticated, &mut tally).await;
        if route.access != Access::Public {
            assert!(
                matches!(status, Some(400 | 401)),
                "{}: {status:?}",
                unauthenticated.what
            );
        }
        assert_alive(&server, &http, route.path).await;
    }

    // Every Connect method we define, by name; and an unknown one per service.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    // `WorkerService/Connect` is a bidirectional stream: on Connect it is refused like the
    // others; its gRPC refusals are tested with a tonic client in tests/worker_stream.rs.
    let mut methods: Vec<_> = connect_methods();
    assert!(methods.len() > 30, "the descriptors list our methods");
    for service in ["ironflow.v1.IronflowService", "ironflow.v1.PubSubService"] {
        methods.push((service.into(), "NoSuchMethod".into(), false));
    }
    for (service, name, streaming) in &methods {
        let path = format!("/{service}/{name}");
        let before = table_counts(&server.url).await;
        let mut refused: Vec<ConnectBody> = vec![
            ("invalid JSON", Some("application/json"), None, b"{\"a\":".to_vec()),
            ("an array", Some("application/json"), None, b"[]".to_vec()),
            ("U+0000", Some("application/json"), None, br#"{"event":"\u0000","name":"\u0000","topic":"\u0000","id":"\u0000","runId":"\u0000","functionId":"\u0000"}"#.to_vec()),
            ("deep nesting", Some("application/json"), None, format!("{{\"data\":{}{}}}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes()),
            ("junk protobuf", Some("application/proto"), None, vec![0xFF; 64]),
            ("truncated protobuf", Some("application/proto"), None, vec![0x0A, 0xFF, 0xFF, 0xFF, 0x0F, b'x']),
            ("a gzip bomb", Some("application/proto"), Some("gzip"), bomb.clone()),
            ("bad gzip", Some("application/json"), Some("gzip"), b"not gzip".to_vec()),
            ("unknown encoding", Some("application/json"), Some("br"), b"{}".to_vec()),
            ("bad content type", Some("text/xml"), None, b"<a/>".to_vec()),
            ("over the size limit", Some("application/json"), None, vec![b' '; MAX_PAYLOAD + 128 * 1024]),
        ];
        if *streaming {
            // Connect streaming content types: an enveloped junk message.
            refused.push((
                "junk stream envelope",
                Some("application/connect+json"),
                None,
                vec![0, 0, 0, 0, 3, b'{', b'x', b'}'],
            ));
            refused.push((
                "short stream envelope",
                Some("application/connect+proto"),
                None,
                vec![0, 0, 0],
            ));
        }
        for (what, content_type, encoding, body) in refused {
            let probe = Probe {
                what: format!("{path} with {what}"),
                method: reqwest::Method::POST,
                path: path.clone(),
                key: true,
                content_type,
                content_encoding: encoding,
                body,
            };
            send(&server, &http, &probe, &mut tally).await;
        }
        let after = table_counts(&server.url).await;
        if after != before {
            tally
                .writes_on_refusal
                .push(format!("{path}: {before:?} → {after:?}"));
        }
        if !*streaming {
            for (what, body) in [
                ("empty object", b"{}".to_vec()),
                ("unknown fields", br#"{"zzz": 1}"#.to_vec()),
                ("wrong types", br#"{"event": 5, "name": [], "data": "x", "limit": "many", "timeoutMs": "soon", "triggers": {}}"#.to_vec()),
                ("huge numbers", br#"{"limit": 99999999999999999999, "timeoutMs": 2147483648, "pageSize": -1}"#.to_vec()),
            ] {
                let probe = Probe {
                    what: format!("{path} with {what}"),
                    method: reqwest::Method::POST,
                    path: path.clone(),
                    key: true,
                    content_type: Some("application/json"),
                    content_encoding: None,
                    body,
                };
                send(&server, &http, &probe, &mut tally).await;
            }
            let empty_proto = Probe {
                what: format!("{path} with an empty protobuf"),
                method: reqwest::Method::POST,
                path: path.clone(),
                key: true,
                content_type: Some("application/proto"),
                content_encoding: None,
                body: Vec::new(),
            };
            send(&server, &http, &empty_proto, &mut tally).await;
        }
        assert_alive(&server, &http, &path).await;
    }

    println!("fuzz ({backend:?}): {}", tally.summary());
    assert!(
        tally.server_errors.is_empty(),
        "5xx answers:\n{}",
        tally.server_errors.join("\n")
    );
    assert!(
        tally.non_json_errors.is_empty(),
        "errors that are not the JSON body:\n{}",
        tally.non_json_errors.join("\n")
    );
    assert!(
        tally.writes_on_refusal.is_empty(),
        "refused input wrote:\n{}",
        tally.writes_on_refusal.join("\n")
    );
    server.stop().await;
}

both_backends! {
    every_route => fuzz_every_route;
}
