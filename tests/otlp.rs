//! OTLP tracing end to end, on both backends: a real `ironflow serve --otlp-endpoint` exporting
//! to an in-process collector (a tonic server implementing the collector's trace service). An
//! emit carrying a W3C `traceparent` starts a run; the request, the emit, the dispatch and the
//! commit of the worker's report are spans of the caller's trace, and the job hands the worker
//! the context its own span joins.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, FakeWorker, eventually, fresh_database};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Value, json};

/// One span as the collector received it (ids in hex).
#[derive(Clone, Debug)]
struct Received {
    trace: String,
    span: String,
    parent: String,
    name: String,
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("collector");
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Received {
                        trace: hex::encode(&s.trace_id),
                        span: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        name: s.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (Collected, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector port");
    let addr = listener.local_addr().expect("addr");
    let collected = Collected::default();
    let service = TraceServiceServer::new(collected.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("collector serves");
    });
    (collected, format!("http://{addr}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Server {
    child: std::process::Child,
    base: String,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(db_url: &str, endpoint: &str, dir: &std::path::Path) -> Server {
    let port = free_port();
    let key_file = dir.join("key");
    let child = Command::new(env!("CARGO_BIN_EXE_ironflow"))
        .args(["serve", "--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--db")
        .arg(db_url)
        .arg("--bootstrap-key-file")
        .arg(&key_file)
        .arg("--otlp-endpoint")
        .arg(endpoint)
        // Export batches every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ironflow serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("the server is ready", Duration::from_secs(60), || async {
        match http.get(format!("{base}/ready")).send().await {
            Ok(r) if r.status().is_success() => Some(()),
            _ => None,
        }
    })
    .await;
    let key = std::fs::read_to_string(&key_file)
        .expect("bootstrap key")
        .trim()
        .to_owned();
    Server { child, base, key }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn one_run_is_one_trace(backend: Backend) {
    let (collected, endpoint) = collector().await;
    let (db_url, _guard) = fresh_database(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = if backend == Backend::Sqlite {
        dir.path().join("ironflow.db").display().to_string()
    } else {
        db_url.clone()
    };
    let server = serve(&db, &endpoint, dir.path()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/ironflow.v1.IronflowService/RegisterFunction",
            server.base
        ))
        .bearer_auth(&server.key)
        .json(&json!({"id": "traced", "triggers": [{"event": "traced.go"}]}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 200);

    let emitted: Value = http
        .post(format!("{}/api/v1/events", server.base))
        .bearer_auth(&server.key)
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({"name": "traced.go", "data": {"n": 1}}))
        .send()
        .await
        .expect("emit")
        .json()
        .await
        .expect("emit answer");
    assert_eq!(
        emitted["run_ids"].as_array().map(Vec::len),
        Some(1),
        "{emitted}"
    );

    // The worker gets the run's trace in its job, and the dispatch span to parent on.
    let worker = FakeWorker::register_at(&server.base, &server.key, "w-otlp", &["traced"]).await;
    let job = worker.next_job().await;
    assert_eq!(job["context"]["trace_id"], TRACE, "{job}");
    let traceparent = job["context"]["metadata"]["traceparent"]
        .as_str()
        .expect("a traceparent in the job context")
        .to_owned();
    let dispatch_span = traceparent.split('-').nth(2).expect("span id").to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE}-")),
        "{traceparent}"
    );

    // The worker's own span, exported as an OTLP client would, under the dispatch span.
    let worker_span_id = "1122334455667788";
    let mut client = TraceServiceClient::connect(endpoint.clone())
        .await
        .expect("collector client");
    client
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: hex::decode(TRACE).expect("hex"),
                        span_id: hex::decode(worker_span_id).expect("hex"),
                        parent_span_id: hex::decode(&dispatch_span).expect("hex"),
                        name: "worker.handler".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .expect("worker span exported");
    let (status, _) = worker
        .report(&job, json!({"status": "completed", "output": {"ok": true}}))
        .await;
    assert_eq!(status, 200);

    let spans = eventually(
        "the server's spans of the run to arrive",
        Duration::from_secs(30),
        || {
            let collected = collected.clone();
            async move {
                let spans = collected.0.lock().expect("collector").clone();
                let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                [
                    "ironflow.emit",
                    "ironflow.dispatch",
                    "ironflow.commit",
                    "worker.handler",
                ]
                .iter()
                .all(|n| names.contains(n))
                .then_some(spans)
            }
        },
    )
    .await;
    let by_name: HashMap<&str, &Received> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    for name in [
        "ironflow.emit",
        "ironflow.dispatch",
        "ironflow.commit",
        "worker.handler",
    ] {
        assert_eq!(
            by_name[name].trace, TRACE,
            "{name} is in the caller's trace: {spans:?}"
        );
    }
    let request = spans
        .iter()
        .find(|s| s.name == "request" && s.parent == CALLER_SPAN)
        .unwrap_or_else(|| panic!("the emit request is a child of the caller's span: {spans:?}"));
    assert_eq!(
        by_name["ironflow.emit"].parent, request.span,
        "emit under the request"
    );
    assert_eq!(
        by_name["ironflow.dispatch"].parent, by_name["ironflow.emit"].span,
        "dispatch under the emit"
    );
    assert_eq!(
        by_name["ironflow.dispatch"].span, dispatch_span,
        "the job carries the dispatch span"
    );
    assert_eq!(
        by_name["ironflow.commit"].parent, dispatch_span,
        "commit under the dispatch"
    );
    assert_eq!(by_name["worker.handler"].parent, dispatch_span);
}

both_backends! {
    otlp => one_run_is_one_trace;
}
