//! The worker stream (`WorkerService/Connect`, ironflow-py's `WorkerMessage` / `EngineMessage`
//! schema) at the protocol level on both backends: over gRPC with a raw tonic client —
//! registration, assignments bounded by `max_concurrent_jobs`, per-step commits acked only once
//! durable, reports sent without waiting applied in order, memoized steps on the next
//! dispatch, stale fences, nacks, lease refreshes, cancellation, a disconnected worker's jobs
//! handed back at once, refusals of bad input — and over the Connect bidirectional protocol
//! (HTTP/2, `application/connect+proto`) with a raw h2c client.

mod common;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, TestServer, raw_count};
use futures::StreamExt;
use ironflow::proto::v1 as pb;
use ironflow::proto::v1::worker_service_client::WorkerServiceClient;
use pb::engine_message::Payload as Engine;
use pb::step_yielded::YieldInfo;
use pb::worker_message::Payload as Worker;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const STALE: &str = "STALE_EXECUTION";

fn register(worker_id: &str, functions: &[&str], capacity: i32) -> Worker {
    Worker::Register(pb::WorkerRegister {
        worker_id: worker_id.into(),
        hostname: "test".into(),
        function_ids: functions.iter().map(|f| (*f).to_owned()).collect(),
        max_concurrent_jobs: capacity,
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        version: Some(pb::WorkerVersion {
            sdk: "raw".into(),
            runtime: "test".into(),
        }),
    })
}

fn to_value(json: &Value) -> pbjson_types::Value {
    use pbjson_types::value::Kind;
    let kind = match json {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().expect("a number")),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(pbjson_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        }),
    };
    pbjson_types::Value { kind: Some(kind) }
}

/// One worker stream over gRPC: what we send, what the server sends.
struct Stream {
    tx: mpsc::Sender<pb::WorkerMessage>,
    rx: tonic::Streaming<pb::EngineMessage>,
}

/// Opens a stream whose first message is `first`; the server answers once it has read it.
async fn open_with(
    server: &TestServer,
    key: Option<&str>,
    first: Worker,
) -> Result<Stream, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(server.base.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("h2c connection");
    let mut client = WorkerServiceClient::new(channel);
    let (tx, outbound) = mpsc::channel(64);
    tx.send(pb::WorkerMessage {
        payload: Some(first),
    })
    .await
    .expect("queued");
    let outbound = futures::stream::unfold(outbound, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    });
    let mut request = tonic::Request::new(outbound);
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header value"),
        );
    }
    let rx = client.connect(request).await?.into_inner();
    Ok(Stream { tx, rx })
}

impl Stream {
    async fn open(server: &TestServer, worker_id: &str, functions: &[&str], capacity: i32) -> Self {
        let mut stream = open_with(
            server,
            Some(&server.key),
            register(worker_id, functions, capacity),
        )
        .await
        .expect("stream opens");
        match stream.next().await {
            Engine::Registered(r) => {
                assert_eq!(r.worker_id, worker_id);
                assert!(r.heartbeat_interval_ms > 0, "{r:?}");
            }
            other => panic!("expected registered, got {other:?}"),
        }
        stream
    }

    async fn send(&mut self, payload: Worker) {
        self.tx
            .send(pb::WorkerMessage {
                payload: Some(payload),
            })
            .await
            .expect("stream open");
    }

    async fn next(&mut self) -> Engine {
        tokio::time::timeout(Duration::from_secs(15), self.rx.message())
            .await
            .expect("a server message within 15 s")
            .expect("stream healthy")
            .expect("stream open")
            .payload
            .expect("a payload")
    }

    async fn next_job(&mut self) -> pb::JobAssignment {
        loop {
            match self.next().await {
                Engine::Job(job) => return job,
                Engine::LeaseRefresh(_) => {}
                other => panic!("expected a job, got {other:?}"),
            }
        }
    }

    /// The next `step_ack` (a job assigned in between is returned too).
    async fn next_ack(&mut self) -> pb::StepAck {
        loop {
            match self.next().await {
                Engine::StepAck(ack) => return ack,
                Engine::LeaseRefresh(_) => {}
                other => panic!("expected step_ack, got {other:?}"),
            }
        }
    }

    /// Sends a report and returns the server's ack of it, which must be keyed `key`.
    async fn report(&mut self, key: &str, payload: Worker) -> pb::StepAck {
        self.send(payload).await;
        let ack = self.next_ack().await;
        assert_eq!(ack.step_id, key, "acks come in report order");
        ack
    }

    /// `step_started` then `step_completed` for `<run>:<name>:0`; returns the ack.
    async fn step(&mut self, job: &pb::JobAssignment, name: &str, output: Value) -> pb::StepAck {
        let step_id = format!("{}:{name}:0", job.run_id);
        self.send(started(job, &step_id, name)).await;
        self.report(&step_id, completed(job, &step_id, &output))
            .await
    }
}

fn started(job: &pb::JobAssignment, step_id: &str, name: &str) -> Worker {
    Worker::StepStarted(pb::StepStarted {
        job_id: job.job_id.clone(),
        step_id: step_id.into(),
        name: name.into(),
        step_type: pb::StepType::Invoke as i32,
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
    })
}

fn completed(job: &pb::JobAssignment, step_id: &str, output: &Value) -> Worker {
    Worker::StepCompleted(pb::StepCompleted {
        job_id: job.job_id.clone(),
        step_id: step_id.into(),
        output_value: Some(to_value(output)),
        duration_ms: 12,
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
        ..Default::default()
    })
}

fn job_completed(job: &pb::JobAssignment, output: &Value) -> Worker {
    Worker::JobCompleted(pb::JobCompleted {
        job_id: job.job_id.clone(),
        output_value: Some(to_value(output)),
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
        ..Default::default()
    })
}

fn job_failed(job: &pb::JobAssignment, message: &str, retryable: bool) -> Worker {
    Worker::JobFailed(pb::JobFailed {
        job_id: job.job_id.clone(),
        error: Some(pb::Error {
            message: message.into(),
            code: "E_BOOM".into(),
            retryable,
            ..Default::default()
        }),
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
        ..Default::default()
    })
}

/// A proto value as JSON, integral numbers as integers (as the server reads them).
fn from_value(v: &pbjson_types::Value) -> Value {
    use pbjson_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 => json!(*n as i64),
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_value(v)))
                .collect(),
        ),
    }
}

fn data_of(job: &pb::JobAssignment) -> Value {
    let event = job.event.as_ref().expect("an event");
    from_value(event.data_value.as_ref().expect("data"))
}

async fn register_fn(server: &TestServer, id: &str, event: &str) {
    server
        .register_function(json!({"id": id, "triggers": [{"event": event}],
               "retry": {"maxAttempts": 3, "initialDelayMs": 50, "backoffFactor": 1.0, "maxDelayMs": 50}}))
        .await;
}

/// Emits an event that starts exactly one run; returns its id.
async fn emit(server: &TestServer, name: &str, data: Value) -> String {
    let runs = server.emit_runs(name, data).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().expect("a run")
}

/// Steps committed one by one, a sleep, then the next dispatch carries them as memos and the
/// run completes; each commit is visible in the database before its ack arrives.
async fn steps_commit_then_memoize(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-flow", "s.flow").await;
    let mut w = Stream::open(&server, "w1", &["s-flow"], 1).await;
    let workers = server.get_json("/api/v1/workers").await;
    assert_eq!(workers["workers"][0]["id"], "w1", "{workers}");
    let run_id = emit(&server, "s.flow", json!({"n": 1})).await;
    let job = w.next_job().await;
    assert_eq!(job.run_id, run_id);
    assert!(job.completed_steps.is_empty());
    assert_eq!(data_of(&job), json!({"n": 1}));
    assert_eq!(job.event.as_ref().expect("event").name, "s.flow");
    assert!(job.lease_expires_at.is_some());

    let ack = w.step(&job, "charge", json!({"a": 1})).await;
    assert!(ack.accepted, "{ack:?}");
    // Acked means durable: the step is readable now, under the name `step_started` gave.
    let steps = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await;
    assert_eq!(
        steps["steps"][0]["step_id"],
        format!("{run_id}:charge:0"),
        "{steps}"
    );
    assert_eq!(steps["steps"][0]["name"], "charge", "{steps}");
    assert_eq!(steps["steps"][0]["output"], json!({"a": 1}), "{steps}");

    let nap = format!("{run_id}:nap:0");
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(200);
    let ack = w
        .report(
            &nap,
            Worker::StepYielded(pb::StepYielded {
                job_id: job.job_id.clone(),
                step_id: nap.clone(),
                yield_info: Some(YieldInfo::Sleep(pb::SleepYield {
                    until: Some(pbjson_types::Timestamp::from(until)),
                })),
                execution_seq: job.execution_seq,
                lease_token: job.lease_token.clone(),
            }),
        )
        .await;
    assert!(ack.accepted, "{ack:?}");
    // The one slot is free again: the resumed run comes to this worker.
    let resumed = w.next_job().await;
    assert_eq!(resumed.run_id, run_id);
    assert!(resumed.execution_seq > job.execution_seq);
    let memo: Vec<(&str, &str)> = resumed
        .completed_steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        memo,
        vec![
            (format!("{run_id}:charge:0").as_str(), "completed"),
            (nap.as_str(), "completed")
        ]
    );
    assert_eq!(
        resumed.completed_steps[0].output_value,
        Some(to_value(&json!({"a": 1})))
    );
    assert!(chrono::Utc::now() >= until, "not before the sleep ends");
    let ack = w
        .report(
            &resumed.job_id,
            job_completed(&resumed, &json!({"done": true})),
        )
        .await;
    assert!(ack.accepted, "{ack:?}");
    let done = server.run_json(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], json!({"done": true}));
    server.stop().await;
}

/// A worker that does not wait for acks (as ironflow-py's does not): its steps and result,
/// sent back to back, are applied in the order sent and each is acked.
async fn pipelined_reports_apply_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-pipe", "s.pipe").await;
    let mut w = Stream::open(&server, "w-pipe", &["s-pipe"], 2).await;
    let run_id = emit(&server, "s.pipe", json!({})).await;
    let job = w.next_job().await;
    w.send(Worker::JobAck(pb::JobAck {
        job_id: job.job_id.clone(),
        run_id: job.run_id.clone(),
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
    }))
    .await;
    let names = ["first", "second", "third"];
    for (n, name) in names.iter().enumerate() {
        let id = format!("{run_id}:{name}:0");
        w.send(started(&job, &id, name)).await;
        w.send(completed(&job, &id, &json!(n))).await;
    }
    w.send(job_completed(&job, &json!("all"))).await;
    let mut acked = Vec::new();
    for _ in 0..4 {
        let ack = w.next_ack().await;
        assert!(ack.accepted, "{ack:?}");
        acked.push(ack.step_id);
    }
    let mut expected: Vec<String> = names.iter().map(|n| format!("{run_id}:{n}:0")).collect();
    expected.push(job.job_id.clone());
    assert_eq!(acked, expected);
    let steps = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await;
    let stored: Vec<(String, Value)> = steps["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["output"].clone(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        vec![
            ("first".to_owned(), json!(0)),
            ("second".to_owned(), json!(1)),
            ("third".to_owned(), json!(2))
        ]
    );
    assert_eq!(server.run_json(&run_id).await["status"], "completed");
    server.stop().await;
}

/// No more assignments than `max_concurrent_jobs`; a malformed report is refused naming the
/// field without ending the stream; a failed attempt is retried by policy; a stale fence is
/// acked `STALE_EXECUTION`.
async fn capacity_retries_and_refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-two", "s.two").await;
    let mut w = Stream::open(&server, "w2", &["s-two"], 1).await;
    let first = emit(&server, "s.two", json!({"n": 1})).await;
    let second = emit(&server, "s.two", json!({"n": 2})).await;
    let job = w.next_job().await;
    let ack = w
        .report(
            "r:x:0",
            Worker::StepYielded(pb::StepYielded {
                job_id: job.job_id.clone(),
                step_id: "r:x:0".into(),
                yield_info: None,
                execution_seq: job.execution_seq,
                lease_token: job.lease_token.clone(),
            }),
        )
        .await;
    assert!(
        !ack.accepted && ack.error.contains("step_yielded needs one of"),
        "{ack:?}"
    );
    // One slot, one job: the ack came, no second assignment before it.
    let ack = w.report(&job.job_id, job_failed(&job, "boom", true)).await;
    assert!(ack.accepted, "{ack:?}");
    // The same fence again is stale: that dispatch is over.
    let ack = w.report(&job.job_id, job_completed(&job, &json!(1))).await;
    assert_eq!(
        (ack.accepted, ack.error.as_str()),
        (false, STALE),
        "{ack:?}"
    );

    // One at a time: the other run and the retry of the failed one.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let next = w.next_job().await;
        seen.push((next.run_id.clone(), next.attempt));
        let ack = w
            .report(&next.job_id, job_completed(&next, &json!(7)))
            .await;
        assert!(ack.accepted, "{ack:?}");
    }
    seen.sort();
    let retried = if job.run_id == first { &first } else { &second };
    let mut expected = vec![
        (first.clone(), if retried == &first { 2 } else { 1 }),
        (second.clone(), if retried == &second { 2 } else { 1 }),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    for id in [&first, &second] {
        assert_eq!(server.run_json(id).await["status"], "completed");
    }
    let failed = raw_count(
        &server.url,
        &format!(
            "SELECT count(*) FROM history WHERE run_id = '{}' AND kind = 'run.retrying'",
            job.run_id
        ),
    )
    .await;
    assert_eq!(failed, 1, "the failed attempt is in the history");
    server.stop().await;
}

/// A cancelled run is taken from its worker (`cancel`, then late reports are stale); a worker
/// that disconnects hands its job back at once, and another worker gets it.
async fn cancel_and_disconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-c", "s.c").await;
    let mut w = Stream::open(&server, "w3", &["s-c"], 2).await;
    let run_id = emit(&server, "s.c", json!({})).await;
    let job = w.next_job().await;
    let status = server
        .post(&format!("/api/v1/runs/{run_id}/cancel"))
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .expect("sent")
        .status();
    assert!(status.is_success());
    match w.next().await {
        Engine::Cancel(c) => {
            assert_eq!(c.job_id, job.job_id);
            assert!(c.reason.contains(&run_id), "{c:?}");
        }
        other => panic!("expected cancel, got {other:?}"),
    }
    let ack = w.step(&job, "late", json!(1)).await;
    assert_eq!(
        (ack.accepted, ack.error.as_str()),
        (false, STALE),
        "{ack:?}"
    );

    let other = emit(&server, "s.c", json!({"k": 2})).await;
    let held = w.next_job().await;
    assert_eq!(held.run_id, other);
    drop(w); // the worker goes away while holding the job
    let mut w2 = Stream::open(&server, "w4", &["s-c"], 1).await;
    let again = tokio::time::timeout(Duration::from_secs(5), w2.next_job())
        .await
        .expect("handed over well before the lease expires");
    assert_eq!(again.run_id, other);
    assert_eq!(again.attempt, 1, "a released job uses no attempt");
    server.stop().await;
}

/// A heartbeat renews what the stream holds and says which listed jobs it does not; a nacked
/// job goes back to the queue with no attempt used and reaches another worker.
async fn heartbeats_and_nacks(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-hb", "s.hb").await;
    let mut w = Stream::open(&server, "w-hb", &["s-hb"], 1).await;
    let run_id = emit(&server, "s.hb", json!({})).await;
    let job = w.next_job().await;
    let active = |job_id: &str, seq: i64| pb::ActiveJob {
        job_id: job_id.into(),
        run_id: run_id.clone(),
        execution_seq: seq,
        lease_token: job.lease_token.clone(),
        started_at: None,
    };
    w.send(Worker::Heartbeat(pb::WorkerHeartbeat {
        worker_id: "w-hb".into(),
        active_jobs: 2,
        jobs: vec![
            active(&job.job_id, job.execution_seq),
            active("not-mine", 1),
        ],
        metrics: None,
    }))
    .await;
    match w.next().await {
        Engine::LeaseRefresh(r) => {
            let states: Vec<i32> = r.segments.iter().map(|s| s.state).collect();
            assert_eq!(
                states,
                vec![
                    pb::LeaseState::Refreshed as i32,
                    pb::LeaseState::Stale as i32
                ]
            );
        }
        other => panic!("expected lease_refresh, got {other:?}"),
    }
    w.send(Worker::JobNack(pb::JobNack {
        job_id: job.job_id.clone(),
        run_id: job.run_id.clone(),
        execution_seq: job.execution_seq,
        lease_token: job.lease_token.clone(),
        reason: pb::JobNackReason::Draining as i32,
    }))
    .await;
    let mut w2 = Stream::open(&server, "w-hb2", &["s-hb"], 1).await;
    let again = tokio::time::timeout(Duration::from_secs(5), w2.next_job())
        .await
        .expect("a nacked job is queued again at once");
    assert_eq!(again.run_id, run_id);
    assert_eq!(again.attempt, 1, "a nack uses no attempt");
    let ack = w2
        .report(&again.job_id, job_completed(&again, &json!(1)))
        .await;
    assert!(ack.accepted, "{ack:?}");
    server.stop().await;
}

/// A held job whose lease expired (its worker went quiet) is `STALE` at the next heartbeat,
/// and the stream's slot is free again: the retry comes to the same worker.
async fn an_expired_lease_is_stale_at_the_heartbeat(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        common::ServerConfig {
            lease_ttl: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    register_fn(&server, "s-exp", "s.exp").await;
    let mut w = Stream::open(&server, "w-exp", &["s-exp"], 1).await;
    let run_id = emit(&server, "s.exp", json!({})).await;
    let job = w.next_job().await;
    let expired =
        format!("SELECT count(*) FROM history WHERE run_id = '{run_id}' AND kind = 'run.retrying'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while raw_count(&server.url, &expired).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.send(Worker::Heartbeat(pb::WorkerHeartbeat {
        worker_id: "w-exp".into(),
        active_jobs: 1,
        jobs: vec![pb::ActiveJob {
            job_id: job.job_id.clone(),
            run_id: run_id.clone(),
            execution_seq: job.execution_seq,
            lease_token: job.lease_token.clone(),
            started_at: None,
        }],
        metrics: None,
    }))
    .await;
    // Both come: the refresh, and the retry on the slot it freed (in either order).
    let (mut refreshed, mut retry) = (None, None);
    while refreshed.is_none() || retry.is_none() {
        match w.next().await {
            Engine::LeaseRefresh(r) => {
                refreshed = Some(r.segments.iter().map(|s| s.state).collect::<Vec<i32>>());
            }
            Engine::Job(job) => retry = Some(job),
            other => panic!("expected lease_refresh and the retry; got {other:?}"),
        }
    }
    assert_eq!(refreshed, Some(vec![pb::LeaseState::Stale as i32]));
    let retry = retry.expect("the retry");
    assert_eq!((retry.run_id.as_str(), retry.attempt), (run_id.as_str(), 2));
    server.stop().await;
}

/// Authentication and the first message are checked before the stream starts.
async fn handshake_refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_key = open_with(&server, None, register("w", &["f"], 1)).await;
    assert_eq!(
        no_key.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let heartbeat_first = Worker::Heartbeat(pb::WorkerHeartbeat::default());
    let bad_first = open_with(&server, Some(&server.key), heartbeat_first).await;
    let status = bad_first.err().expect("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("register"), "{status:?}");
    let empty_id = open_with(&server, Some(&server.key), register("", &["f"], 1)).await;
    assert_eq!(
        empty_id.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );
    server.stop().await;
}

/// Several reports in one transaction (the group commit): each is answered on its own, a stale
/// fence refuses only its report, and the others' steps are all durable.
async fn reports_share_one_transaction(backend: Backend) {
    use ironflow::domain::job::{Fence, JobReport, ReportOutcome, ReportedStep};
    use ironflow::store::execution::FenceOutcome;
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-batch", "s.batch").await;
    let mut w = Stream::open(&server, "w5", &["s-batch"], 3).await;
    let mut runs = Vec::new();
    for n in 0..3 {
        runs.push(emit(&server, "s.batch", json!({"n": n})).await);
    }
    let jobs = [w.next_job().await, w.next_job().await, w.next_job().await];
    let store = ironflow::store::open_with(&common::db_options(&server.url))
        .await
        .expect("store");
    let env = store
        .default_environment()
        .await
        .expect("read")
        .expect("bootstrapped")
        .id;
    let reports: Vec<JobReport> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| JobReport {
            dispatch_id: job.job_id.clone(),
            fence: Fence {
                env_id: env.clone(),
                worker_id: "w5".into(),
                execution_seq: job.execution_seq,
                // The middle one carries a wrong lease token.
                lease_token: if i == 1 {
                    "not-the-token".into()
                } else {
                    job.lease_token.clone()
                },
            },
            steps: vec![ReportedStep {
                id: format!("{}:a:0", job.run_id),
                name: "a".into(),
                step_type: "run".into(),
                completed: true,
                output: Some(json!(i)),
                error: None,
                started_at: None,
                ended_at: None,
                compensation_for: None,
            }],
            step_offset: 0,
            outcome: ReportOutcome::Progress,
        })
        .collect();
    let lease = ironflow::domain::time::Ts::now().plus(Duration::from_secs(60));
    let outcomes = store
        .report_jobs(&reports, lease)
        .await
        .expect("one transaction");
    let accepted: Vec<bool> = outcomes
        .iter()
        .map(|o| matches!(o, FenceOutcome::Accepted(_)))
        .collect();
    assert_eq!(accepted, vec![true, false, true]);
    for (i, job) in jobs.iter().enumerate() {
        let run = &job.run_id;
        // The same rows the one-by-one path writes: the step (status, order, output, attempt)
        // and its history entry.
        let step = format!(
            "SELECT count(*) FROM steps WHERE run_id = '{run}' AND step_id = '{run}:a:0' \
             AND status = 'completed' AND sequence = 0 AND attempt = 1 AND CAST(output AS TEXT) = '{i}'"
        );
        let entry = format!(
            "SELECT count(*) FROM history WHERE run_id = '{run}' AND kind = 'step.completed'"
        );
        let expected = i64::from(i != 1);
        assert_eq!(
            raw_count(&server.url, &step).await,
            expected,
            "step of job {i}"
        );
        assert_eq!(
            raw_count(&server.url, &entry).await,
            expected,
            "history of job {i}"
        );
    }
    store.close().await;
    server.stop().await;
}

/// A pause requested while the stream worker runs the job takes effect at its next step
/// commit: the step is durable, the ack is stale and a `cancel` follows (the worker drops the
/// handler), the run is paused; resumed, it is dispatched again with the step memoized.
async fn pause_at_a_stream_step(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "p-flow", "p.flow").await;
    let mut w = Stream::open(&server, "w-pause", &["p-flow"], 2).await;
    let run_id = emit(&server, "p.flow", json!({})).await;
    let job = w.next_job().await;
    let (status, body) = server
        .connect_json("PauseRun", json!({"run_id": run_id}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pause_requested"))
    );
    let step_id = format!("{run_id}:a:0");
    w.send(started(&job, &step_id, "a")).await;
    w.send(completed(&job, &step_id, &json!(1))).await;
    match w.next().await {
        Engine::Cancel(c) => assert_eq!(c.job_id, job.job_id),
        other => panic!("expected cancel, got {other:?}"),
    }
    let ack = w.next_ack().await;
    assert_eq!(
        (ack.accepted, ack.error.as_str()),
        (false, STALE),
        "the paused dispatch is over: {ack:?}"
    );
    let run = server.run_json(&run_id).await;
    assert_eq!(run["status"], "paused", "{run}");
    let steps = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await;
    assert_eq!(
        steps["steps"][0]["output"],
        json!(1),
        "the step is durable: {steps}"
    );
    let (status, body) = server
        .connect_json("ResumeRun", json!({"run_id": run_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    let again = w.next_job().await;
    assert_eq!(again.run_id, run_id);
    assert_eq!(again.completed_steps.len(), 1, "the step is memoized");
    server.stop().await;
}

/// A raw Connect bidirectional stream over h2c: enveloped protobuf both ways, the end-stream
/// message last.
struct ConnectStream {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    body: Pin<Box<dyn futures::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: Vec<u8>,
}

fn envelope(message: &pb::WorkerMessage) -> Bytes {
    let payload = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// A frame of the response: a message, or the end-stream JSON.
enum Frame {
    Message(pb::EngineMessage),
    End(Value),
}

impl ConnectStream {
    async fn open(
        server: &TestServer,
        key: Option<&str>,
        method: &str,
        first: Worker,
    ) -> (u16, Self) {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tx.send(Ok(envelope(&pb::WorkerMessage {
            payload: Some(first),
        })))
        .await
        .expect("queued");
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (b, rx))
        }));
        let mut request = client
            .post(format!(
                "{}/ironflow.v1.WorkerService/{method}",
                server.base
            ))
            .header("content-type", "application/connect+proto")
            .header("connect-protocol-version", "1")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(Duration::from_secs(15), request.send())
            .await
            .expect("answered within 15 s")
            .expect("sent");
        let status = response.status().as_u16();
        let stream = Self {
            tx,
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        };
        (status, stream)
    }

    async fn send(&self, payload: Worker) {
        self.tx
            .send(Ok(envelope(&pb::WorkerMessage {
                payload: Some(payload),
            })))
            .await
            .expect("stream open");
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if self.buffer.len() >= 5 + len {
                    let flags = self.buffer[0];
                    let frame: Vec<u8> = self.buffer.drain(..5 + len).collect();
                    return if flags & 0b10 != 0 {
                        Frame::End(serde_json::from_slice(&frame[5..]).expect("end-stream JSON"))
                    } else {
                        Frame::Message(pb::EngineMessage::decode(&frame[5..]).expect("a message"))
                    };
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(15), self.body.next())
                .await
                .expect("a frame within 15 s")
                .expect("the body goes on")
                .expect("readable");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    async fn next(&mut self) -> Engine {
        match self.frame().await {
            Frame::Message(m) => m.payload.expect("a payload"),
            Frame::End(end) => panic!("the stream ended: {end}"),
        }
    }
}

/// ironflow-py's transport: the Connect bidirectional protocol on HTTP/2 carries the same
/// conversation; a refused stream and an unknown method say why.
async fn connect_transport(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-connect", "s.connect").await;
    let (status, mut w) = ConnectStream::open(
        &server,
        Some(&server.key),
        "Connect",
        register("w-connect", &["s-connect"], 1),
    )
    .await;
    assert_eq!(status, 200);
    assert!(matches!(w.next().await, Engine::Registered(_)));
    let run_id = emit(&server, "s.connect", json!({"via": "connect"})).await;
    let job = match w.next().await {
        Engine::Job(job) => job,
        other => panic!("expected a job, got {other:?}"),
    };
    assert_eq!(job.run_id, run_id);
    assert_eq!(data_of(&job), json!({"via": "connect"}));
    let step_id = format!("{run_id}:a:0");
    w.send(started(&job, &step_id, "a")).await;
    w.send(completed(&job, &step_id, &json!({"x": 1}))).await;
    w.send(job_completed(&job, &json!("done"))).await;
    for key in [step_id.as_str(), job.job_id.as_str()] {
        match w.next().await {
            Engine::StepAck(ack) => {
                assert!(ack.accepted, "{ack:?}");
                assert_eq!(ack.step_id, key);
            }
            other => panic!("expected step_ack, got {other:?}"),
        }
    }
    let done = server.run_json(&run_id).await;
    assert_eq!(
        (done["status"].as_str(), &done["output"]),
        (Some("completed"), &json!("done"))
    );

    // A second register on the same stream ends it with invalid_argument.
    w.send(register("w-connect", &["s-connect"], 1)).await;
    loop {
        match w.frame().await {
            Frame::End(end) => {
                assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
                break;
            }
            Frame::Message(m) => {
                assert!(matches!(m.payload, Some(Engine::LeaseRefresh(_))), "{m:?}")
            }
        }
    }

    let (status, _) =
        ConnectStream::open(&server, None, "Connect", register("w", &["s-connect"], 1)).await;
    assert_eq!(status, 401, "no key");
    let (status, _) = ConnectStream::open(
        &server,
        Some(&server.key),
        "Reconnect",
        register("w", &["s-connect"], 1),
    )
    .await;
    assert_eq!(status, 501, "unknown methods answer unimplemented");
    server.stop().await;
}

both_backends! {
    a_pause_takes_effect_at_a_stream_step => pause_at_a_stream_step;
    batch => reports_share_one_transaction;
    commits => steps_commit_then_memoize;
    pipelined => pipelined_reports_apply_in_order;
    capacity => capacity_retries_and_refusals;
    cancel => cancel_and_disconnect;
    heartbeats => heartbeats_and_nacks;
    expired_lease => an_expired_lease_is_stale_at_the_heartbeat;
    handshake => handshake_refusals;
    connect => connect_transport;
}
