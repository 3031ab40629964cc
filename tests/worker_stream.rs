//! The gRPC worker stream (`WorkerService/Connect`) at the protocol level on both backends, with
//! a raw tonic client: registration, credit-bounded assignments, per-step commits answered
//! only once durable, memoized steps on the next dispatch, stale fences, cancellation, a
//! disconnected worker's jobs handed back at once, and refusals of bad input.

mod common;

use std::time::Duration;

use common::{Backend, TestServer, raw_count};
use ironflow::proto::v1 as pb;
use ironflow::proto::v1::worker_service_client::WorkerServiceClient;
use pb::server_message::Kind as Server;
use pb::worker_message::Kind as Worker;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One worker stream: what we send, what the server sends.
struct Stream {
    tx: mpsc::Sender<pb::WorkerMessage>,
    rx: tonic::Streaming<pb::ServerMessage>,
    next_request: u64,
}

fn register(worker_id: &str, functions: &[&str]) -> Worker {
    Worker::Register(pb::RegisterWorker {
        worker_id: worker_id.into(),
        hostname: "test".into(),
        function_ids: functions.iter().map(|f| (*f).to_owned()).collect(),
        max_concurrent_jobs: 4,
        sdk_version: "raw".into(),
    })
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
    tx.send(pb::WorkerMessage { kind: Some(first) })
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
    Ok(Stream {
        tx,
        rx,
        next_request: 1,
    })
}

impl Stream {
    async fn open(server: &TestServer, worker_id: &str, functions: &[&str]) -> Self {
        let mut stream = open_with(server, Some(&server.key), register(worker_id, functions))
            .await
            .expect("stream opens");
        match stream.next().await {
            Server::Registered(r) => assert_eq!(r.worker_id, worker_id),
            other => panic!("expected registered, got {other:?}"),
        }
        stream
    }

    async fn send(&mut self, kind: Worker) {
        self.tx
            .send(pb::WorkerMessage { kind: Some(kind) })
            .await
            .expect("stream open");
    }

    async fn next(&mut self) -> Server {
        tokio::time::timeout(Duration::from_secs(15), self.rx.message())
            .await
            .expect("a server message within 15 s")
            .expect("stream healthy")
            .expect("stream open")
            .kind
            .expect("a message kind")
    }

    async fn credit(&mut self, jobs: i32) {
        self.send(Worker::Credit(pb::Credit { jobs })).await;
    }

    async fn next_job(&mut self) -> pb::JobAssignment {
        loop {
            match self.next().await {
                Server::Job(job) => return job,
                Server::Lease(_) => {}
                other => panic!("expected a job, got {other:?}"),
            }
        }
    }

    /// Sends a request built with a fresh request id; returns the server's answer to it.
    async fn request(&mut self, build: impl FnOnce(u64) -> Worker) -> pb::Committed {
        let id = self.next_request;
        self.next_request += 1;
        self.send(build(id)).await;
        loop {
            match self.next().await {
                Server::Committed(c) => {
                    assert_eq!(c.request_id, id, "answers come in request order");
                    return c;
                }
                Server::Lease(_) => {}
                other => panic!("expected committed, got {other:?}"),
            }
        }
    }
}

fn step(job: &pb::JobAssignment, name: &str, output: Value) -> pb::StepRecord {
    let now = chrono::Utc::now().timestamp_millis();
    pb::StepRecord {
        step_id: format!("{}:{name}:0", job.run_id),
        name: name.into(),
        r#type: "run".into(),
        completed: true,
        output_json: output.to_string(),
        started_at_ms: now,
        ended_at_ms: now,
        ..Default::default()
    }
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
/// run completes; each commit is visible in the database before its answer arrives.
async fn steps_commit_then_memoize(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-flow", "s.flow").await;
    let mut w = Stream::open(&server, "w1", &["s-flow"]).await;
    let workers = server.get_json("/api/v1/workers").await;
    assert_eq!(workers["workers"][0]["id"], "w1", "{workers}");
    assert_eq!(workers["workers"][0]["transport"], "grpc", "{workers}");
    w.credit(1).await;
    let run_id = emit(&server, "s.flow", json!({"n": 1})).await;
    let job = w.next_job().await;
    assert_eq!(job.run_id, run_id);
    assert!(job.steps.is_empty());
    let event: Value = serde_json::from_str(&job.event_json).expect("event JSON");
    assert_eq!(event["data"], json!({"n": 1}));
    let fence = job.fence.clone();

    let c = w
        .request(|id| {
            Worker::StepCompleted(pb::StepCompleted {
                request_id: id,
                fence: fence.clone(),
                step: Some(step(&job, "a", json!({"a": 1}))),
            })
        })
        .await;
    assert!(c.ok, "{c:?}");
    // Committed means durable: the step is readable now.
    let steps = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await;
    assert!(
        steps.to_string().contains(&format!("{run_id}:a:0")),
        "{steps}"
    );

    let until = chrono::Utc::now().timestamp_millis() + 200;
    let c = w
        .request(|id| {
            Worker::JobYielded(pb::JobYielded {
                request_id: id,
                fence: fence.clone(),
                steps: vec![],
                r#yield: Some(pb::Yield {
                    step_id: format!("{run_id}:nap:0"),
                    kind: Some(pb::r#yield::Kind::Sleep(pb::Sleep { until_ms: until })),
                }),
            })
        })
        .await;
    assert!(c.ok, "{c:?}");
    // The credit was used by the first job; the resumed run comes after new credit.
    w.credit(1).await;
    let resumed = w.next_job().await;
    assert_eq!(resumed.run_id, run_id);
    let memo: Vec<(&str, &str)> = resumed
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        memo,
        vec![
            (format!("{run_id}:a:0").as_str(), "completed"),
            (format!("{run_id}:nap:0").as_str(), "completed")
        ]
    );
    assert_eq!(resumed.steps[0].output_json, json!({"a": 1}).to_string());
    assert!(
        chrono::Utc::now().timestamp_millis() >= until,
        "not before the sleep ends"
    );
    let fence = resumed.fence.clone();
    let c = w
        .request(|id| {
            Worker::JobCompleted(pb::JobCompleted {
                request_id: id,
                fence,
                steps: vec![],
                output_json: json!({"done": true}).to_string(),
            })
        })
        .await;
    assert!(c.ok, "{c:?}");
    let done = server.run_json(&run_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], json!({"done": true}));
    server.stop().await;
}

/// No more assignments than credit; a failed attempt is retried by policy; a stale fence is
/// answered `stale`; bad JSON is refused without ending the stream.
async fn credit_retries_and_refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-two", "s.two").await;
    let mut w = Stream::open(&server, "w2", &["s-two"]).await;
    let first = emit(&server, "s.two", json!({"n": 1})).await;
    let second = emit(&server, "s.two", json!({"n": 2})).await;
    w.credit(1).await;
    let job = w.next_job().await;
    // One credit, one job: the other run waits (nothing else arrives before we fail this one).
    let fence = job.fence.clone();
    let c = w
        .request(|id| {
            Worker::JobCompleted(pb::JobCompleted {
                request_id: id,
                fence: fence.clone(),
                steps: vec![],
                output_json: "{not json".into(),
            })
        })
        .await;
    assert!(
        !c.ok && !c.stale && c.error.contains("output_json"),
        "{c:?}"
    );
    let c = w
        .request(|id| {
            Worker::JobFailed(pb::JobFailed {
                request_id: id,
                fence: fence.clone(),
                steps: vec![],
                message: "boom".into(),
                code: "E_BOOM".into(),
                retryable: true,
                retry_after_ms: 0,
            })
        })
        .await;
    assert!(c.ok, "{c:?}");
    // The same fence again is stale: that dispatch is over.
    let c = w
        .request(|id| {
            Worker::JobCompleted(pb::JobCompleted {
                request_id: id,
                fence: fence.clone(),
                steps: vec![],
                output_json: "1".into(),
            })
        })
        .await;
    assert!(c.stale && !c.ok, "{c:?}");

    // Two credits: the other run and the retry of the failed one.
    w.credit(2).await;
    let mut runs = vec![w.next_job().await, w.next_job().await];
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(
        runs.iter().map(|j| j.run_id.clone()).collect::<Vec<_>>(),
        expected
    );
    let retried = runs
        .iter()
        .find(|j| j.run_id == job.run_id)
        .expect("the retry");
    assert_eq!(retried.attempt, 2);
    for job in runs {
        let fence = job.fence.clone();
        let c = w
            .request(|id| {
                Worker::JobCompleted(pb::JobCompleted {
                    request_id: id,
                    fence,
                    steps: vec![],
                    output_json: "7".into(),
                })
            })
            .await;
        assert!(c.ok, "{c:?}");
    }
    for id in [&first, &second] {
        assert_eq!(server.run_json(id).await["status"], "completed");
    }
    server.stop().await;
}

/// A cancelled run is taken from its worker (`cancel`, then `stale`); a worker that
/// disconnects hands its job back at once, and another worker gets it.
async fn cancel_and_disconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "s-c", "s.c").await;
    let mut w = Stream::open(&server, "w3", &["s-c"]).await;
    w.credit(2).await;
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
        Server::Cancel(c) => assert_eq!(c.run_id, run_id),
        other => panic!("expected cancel, got {other:?}"),
    }
    let fence = job.fence.clone();
    let c = w
        .request(|id| {
            Worker::StepCompleted(pb::StepCompleted {
                request_id: id,
                fence,
                step: Some(step(&job, "late", json!(1))),
            })
        })
        .await;
    assert!(c.stale, "{c:?}");

    let other = emit(&server, "s.c", json!({"k": 2})).await;
    let held = w.next_job().await;
    assert_eq!(held.run_id, other);
    drop(w); // the worker goes away while holding the job
    let mut w2 = Stream::open(&server, "w4", &["s-c"]).await;
    w2.credit(1).await;
    let again = tokio::time::timeout(Duration::from_secs(5), w2.next_job())
        .await
        .expect("handed over well before the 90 s lease expires");
    assert_eq!(again.run_id, other);
    assert_eq!(again.attempt, 1, "a released job uses no attempt");
    server.stop().await;
}

/// Authentication and the first message are checked before the stream starts.
async fn handshake_refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_key = open_with(&server, None, register("w", &["f"])).await;
    assert_eq!(
        no_key.err().map(|s| s.code()),
        Some(tonic::Code::Unauthenticated)
    );
    let bad_first = open_with(
        &server,
        Some(&server.key),
        Worker::Credit(pb::Credit { jobs: 1 }),
    )
    .await;
    let status = bad_first.err().expect("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("register"), "{status:?}");
    let empty_id = open_with(&server, Some(&server.key), register("", &["f"])).await;
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
    let mut w = Stream::open(&server, "w5", &["s-batch"]).await;
    let mut runs = Vec::new();
    for n in 0..3 {
        runs.push(emit(&server, "s.batch", json!({"n": n})).await);
    }
    w.credit(3).await;
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
        .map(|(i, job)| {
            let fence = job.fence.clone().expect("fence");
            JobReport {
                dispatch_id: fence.job_id,
                fence: Fence {
                    env_id: env.clone(),
                    worker_id: "w5".into(),
                    execution_seq: fence.execution_seq,
                    // The middle one carries a wrong lease token.
                    lease_token: if i == 1 {
                        "not-the-token".into()
                    } else {
                        fence.lease_token
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
            }
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
/// commit: the step is durable, the answer is `stale` (the worker drops the handler), the run
/// is paused; resumed, it is dispatched again with the step memoized.
async fn pause_at_a_stream_step(backend: Backend) {
    let server = TestServer::start(backend).await;
    register_fn(&server, "p-flow", "p.flow").await;
    let mut w = Stream::open(&server, "w-pause", &["p-flow"]).await;
    w.credit(2).await;
    let run_id = emit(&server, "p.flow", json!({})).await;
    let job = w.next_job().await;
    let (status, body) = server
        .connect_json("PauseRun", json!({"run_id": run_id}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pause_requested"))
    );
    let fence = job.fence.clone();
    let c = w
        .request(|id| {
            Worker::StepCompleted(pb::StepCompleted {
                request_id: id,
                fence: fence.clone(),
                step: Some(step(&job, "a", json!(1))),
            })
        })
        .await;
    assert!(c.stale && !c.ok, "the paused dispatch is over: {c:?}");
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
    assert_eq!(again.steps.len(), 1, "the step is memoized");
    server.stop().await;
}

both_backends! {
    a_pause_takes_effect_at_a_stream_step => pause_at_a_stream_step;
    batch => reports_share_one_transaction;
    commits => steps_commit_then_memoize;
    credit => credit_retries_and_refusals;
    cancel => cancel_and_disconnect;
    handshake => handshake_refusals;
}
