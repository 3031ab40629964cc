//! Unit tests of steps against an in-memory stream (no server): step ids, memo lookups, the
//! messages steps and results send, and how yields end an invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::ctx::{Ctx, Job};
use crate::function::{Function, Handler};
use crate::invocation::{self, Ended, Ending};
use crate::link::Link;
use crate::proto::v1 as pb;
use crate::{FnError, Invoke, WaitForEvent};
use pb::step_yielded::YieldInfo;
use pb::worker_message::Payload;

const RUN: &str = "run_1";

/// The server's side of an in-memory stream.
struct FakeServer {
    rx: mpsc::Receiver<pb::WorkerMessage>,
    link: Arc<Link>,
    /// The `step_started` messages `next` skipped, in order.
    started: Vec<pb::StepStarted>,
}

impl FakeServer {
    /// The next message, whatever it is (`step_started` included).
    async fn next_raw(&mut self) -> Payload {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .payload
            .expect("a payload")
    }

    /// The next message that is not a `step_started` (those are fire-and-forget: they are
    /// recorded in `started`).
    async fn next(&mut self) -> Payload {
        loop {
            match self.next_raw().await {
                Payload::StepStarted(s) => self.started.push(s),
                other => return other,
            }
        }
    }

    /// The next message must be the `step_started` of `step_id`.
    async fn expect_started(&mut self, step_id: &str) -> pb::StepStarted {
        match self.next_raw().await {
            Payload::StepStarted(s) => {
                assert_eq!(s.step_id, step_id, "{s:?}");
                s
            }
            other => panic!("expected step_started of {step_id}, got {other:?}"),
        }
    }

    /// Nothing more was sent (after letting the sender run).
    async fn assert_quiet(&mut self) {
        tokio::task::yield_now().await;
        if let Ok(m) = self.rx.try_recv() {
            panic!("unexpected message {m:?}");
        }
    }

    /// Answers the report acknowledged under `key` (a step id, or the job id for a result).
    fn answer(&self, key: &str, accepted: bool, error: &str) {
        self.link.resolve(pb::StepAck {
            step_id: key.into(),
            accepted,
            error: error.into(),
        });
    }

    fn commit(&self, key: &str) {
        self.answer(key, true, "");
    }

    /// Receives the next message (skipping `step_started`), commits it if it is a report,
    /// and returns it.
    async fn next_committed(&mut self) -> Payload {
        let payload = self.next().await;
        if let Some(key) = ack_key(&payload) {
            self.commit(&key);
        }
        payload
    }
}

/// The key the server's `step_ack` for a report carries: the step id for a step's report,
/// the job id for the job's result; `None` for messages that get no answer.
fn ack_key(payload: &Payload) -> Option<String> {
    match payload {
        Payload::StepCompleted(s) => Some(s.step_id.clone()),
        Payload::StepFailed(s) => Some(s.step_id.clone()),
        Payload::StepYielded(y) => Some(y.step_id.clone()),
        Payload::JobCompleted(c) => Some(c.job_id.clone()),
        Payload::JobFailed(f) => Some(f.job_id.clone()),
        _ => None,
    }
}

fn memo(name: &str, n: u32, status: &str, output: Value, error: Value) -> pb::CompletedStep {
    pb::CompletedStep {
        step_id: format!("{RUN}:{name}:{n}"),
        name: name.into(),
        status: status.into(),
        output_value: (!output.is_null()).then(|| crate::wire::to_proto(&output)),
        error_json: if error.is_null() {
            Vec::new()
        } else {
            error.to_string().into_bytes()
        },
        ..Default::default()
    }
}

fn setup(steps: Vec<pb::CompletedStep>, data: Value) -> (Ctx, FakeServer) {
    let (tx, rx) = mpsc::channel(64);
    let link = Arc::new(Link::new(tx));
    let job = Job::from_assignment(pb::JobAssignment {
        job_id: "job_1".into(),
        execution_seq: 3,
        lease_token: "lease".into(),
        run_id: RUN.into(),
        function_id: "f".into(),
        attempt: 2,
        max_attempts: 3,
        event: Some(pb::Event {
            id: "evt_1".into(),
            name: "order.created".into(),
            data_value: Some(crate::wire::to_proto(&data)),
            ..Default::default()
        }),
        completed_steps: steps,
        context: Some(pb::JobContext {
            secrets: [("API_KEY".to_owned(), "s3cret".to_owned())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    // Nothing listens there: a test that publishes gets a connection error.
    let client = crate::Client::new("http://127.0.0.1:9", "key").expect("a client");
    let ctx = Ctx::new(job, link.clone(), Arc::new(Ending::default()), client);
    (
        ctx,
        FakeServer {
            rx,
            link,
            started: Vec::new(),
        },
    )
}

fn handler_of(f: Function) -> Handler {
    f.handler.expect("a handler")
}

/// The fence a report carries: (job id, execution seq, lease token).
fn fence_of(payload: &Payload) -> Option<(&str, i64, &str)> {
    match payload {
        Payload::StepStarted(s) => Some((&s.job_id, s.execution_seq, &s.lease_token)),
        Payload::StepCompleted(s) => Some((&s.job_id, s.execution_seq, &s.lease_token)),
        Payload::StepFailed(s) => Some((&s.job_id, s.execution_seq, &s.lease_token)),
        Payload::StepYielded(y) => Some((&y.job_id, y.execution_seq, &y.lease_token)),
        Payload::JobCompleted(c) => Some((&c.job_id, c.execution_seq, &c.lease_token)),
        Payload::JobFailed(f) => Some((&f.job_id, f.execution_seq, &f.lease_token)),
        _ => None,
    }
}

/// A step's output as JSON.
fn output_of(s: &pb::StepCompleted) -> Value {
    crate::wire::payload(s.output.as_ref(), s.output_value.as_ref())
}

/// A `prost_types::Timestamp` in milliseconds since the epoch.
fn ts_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn job_facts_come_from_the_assignment() {
    let (ctx, _server) = setup(Vec::new(), json!({"x": 1}));
    assert_eq!(ctx.run_id(), RUN);
    assert_eq!(ctx.function_id(), "f");
    assert_eq!(ctx.attempt(), 2);
    assert_eq!(ctx.max_attempts(), 3);
    assert_eq!(ctx.event()["data"], json!({"x": 1}));
    assert_eq!(ctx.secret("API_KEY"), Some("s3cret"));
    assert_eq!(ctx.secret("OTHER"), None);
}

#[tokio::test]
async fn step_ids_count_earlier_steps_of_the_same_name() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let steps = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let a0: i32 = ctx.run("a", || async { Ok(1) }).await?;
            let b0: i32 = ctx.run("b", || async { Ok(2) }).await?;
            let a1: i32 = ctx.run("a", || async { Ok(3) }).await?;
            Ok::<_, FnError>((a0, b0, a1))
        }
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        // Each step is named by a `step_started` (no answer expected) before its result.
        let started = match server.next_raw().await {
            Payload::StepStarted(s) => s,
            other => panic!("expected step_started, got {other:?}"),
        };
        assert_eq!(started.step_type, pb::StepType::Invoke as i32);
        assert_eq!(
            fence_of(&Payload::StepStarted(started.clone())),
            Some(("job_1", 3, "lease"))
        );
        let payload = server.next_raw().await;
        assert_eq!(fence_of(&payload), Some(("job_1", 3, "lease")));
        server.commit(&ack_key(&payload).expect("a report"));
        match payload {
            Payload::StepCompleted(s) => {
                assert_eq!(s.step_id, started.step_id, "started before completed");
                assert!(s.duration_ms >= 0);
                ids.push((s.step_id.clone(), started.name, output_of(&s)));
            }
            other => panic!("expected step_completed, got {other:?}"),
        }
    }
    assert_eq!(
        ids,
        [
            ("run_1:a:0".to_owned(), "a".to_owned(), json!(1)),
            ("run_1:b:0".to_owned(), "b".to_owned(), json!(2)),
            ("run_1:a:1".to_owned(), "a".to_owned(), json!(3)),
        ]
    );
    assert_eq!(steps.await.expect("joined"), Ok((1, 2, 3)));
}

#[tokio::test]
async fn steps_are_numbered_when_called_not_when_polled() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let first = ctx.run("x", || async { Ok("first".to_owned()) });
    let second = ctx.run("x", || async { Ok("second".to_owned()) });
    let task = tokio::spawn(async move {
        let second = second.await?;
        let first = first.await?;
        Ok::<_, FnError>((first, second))
    });
    let order: Vec<String> = [server.next_committed().await, server.next_committed().await]
        .into_iter()
        .map(|p| match p {
            Payload::StepCompleted(s) => s.step_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(order, ["run_1:x:1", "run_1:x:0"]);
    let started: Vec<&str> = server.started.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(started, ["run_1:x:1", "run_1:x:0"]);
    assert_eq!(
        task.await.expect("joined"),
        Ok(("first".to_owned(), "second".to_owned()))
    );
}

#[tokio::test]
async fn a_memoized_step_returns_its_output_without_running() {
    let (ctx, mut server) = setup(
        vec![memo(
            "charge",
            0,
            "completed",
            json!({"id": "ch_1"}),
            Value::Null,
        )],
        json!({}),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = |runs: Arc<AtomicUsize>, id: &'static str| {
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(json!({"id": id}))
        }
    };
    let first: Value = ctx
        .run("charge", counted(runs.clone(), "new"))
        .await
        .expect("memoized");
    assert_eq!(first, json!({"id": "ch_1"}));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the closure did not run");
    server.assert_quiet().await;

    // The second `charge` is `charge:1`: not memoized, so it runs and is reported.
    let second = tokio::spawn({
        let ctx = ctx.clone();
        let runs = runs.clone();
        async move { ctx.run("charge", counted(runs, "new")).await }
    });
    match server.next_committed().await {
        Payload::StepCompleted(s) => assert_eq!(s.step_id, "run_1:charge:1"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(second.await.expect("joined"), Ok(json!({"id": "new"})));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn memo_lookups_handle_failures_mismatches_and_other_statuses() {
    let (ctx, mut server) = setup(
        vec![
            memo(
                "pay",
                0,
                "failed",
                Value::Null,
                json!({"message": "card declined", "code": "DECLINED", "retryable": false}),
            ),
            memo("count", 0, "completed", json!("not a number"), Value::Null),
            memo("unit", 0, "completed", Value::Null, Value::Null),
        ],
        json!({}),
    );
    let e = ctx
        .run("pay", || async { Ok(1) })
        .await
        .expect_err("failed for good");
    assert_eq!(e.message(), "card declined");
    assert_eq!(e.error_code(), Some("DECLINED"));
    assert!(!e.is_retryable());

    let e = ctx
        .run::<u32, _, _>("count", || async { Ok(1) })
        .await
        .expect_err("mismatch");
    assert_eq!(e.error_code(), Some("MEMO_MISMATCH"));
    assert!(!e.is_retryable());

    // An empty output is JSON null: fine for `()`.
    ctx.run("unit", || async { Ok(()) }).await.expect("()");
    server.assert_quiet().await;
}

#[tokio::test]
async fn step_errors_are_recorded_only_when_final() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let e = ctx
        .run::<(), _, _>("flaky", || async { Err(FnError::retryable("try again")) })
        .await
        .expect_err("retryable");
    assert!(e.is_retryable());
    // The step started, but a retryable error is not recorded.
    server.expect_started("run_1:flaky:0").await;
    server.assert_quiet().await;

    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.run::<(), _, _>("doomed", || async {
                Err(FnError::non_retryable("no such account").code("NO_ACCOUNT"))
            })
            .await
        }
    });
    match server.next_committed().await {
        Payload::StepFailed(s) => {
            assert_eq!(s.step_id, "run_1:doomed:0");
            assert_eq!((s.job_id.as_str(), s.execution_seq), ("job_1", 3));
            assert_eq!(
                s.error,
                Some(pb::Error {
                    message: "no such account".into(),
                    code: "NO_ACCOUNT".into(),
                    retryable: false,
                    ..Default::default()
                })
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = task.await.expect("joined").expect_err("non-retryable");
    assert_eq!(e.error_code(), Some("NO_ACCOUNT"));
}

#[tokio::test]
async fn a_sleep_yields_and_the_handler_goes_no_further() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let after_sleep = Arc::new(AtomicUsize::new(0));
    let handler = handler_of(Function::new("f").handler({
        let after_sleep = after_sleep.clone();
        move |ctx: Ctx, _: Value| {
            let after_sleep = after_sleep.clone();
            async move {
                ctx.sleep("nap", Duration::from_secs(60)).await?;
                after_sleep.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FnError>(json!("woke"))
            }
        }
    }));
    let before = chrono::Utc::now().timestamp_millis();
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    let payload = server.next_committed().await;
    assert_eq!(fence_of(&payload), Some(("job_1", 3, "lease")));
    match payload {
        Payload::StepYielded(y) => {
            assert_eq!(y.step_id, "run_1:nap:0");
            match y.yield_info {
                Some(YieldInfo::Sleep(s)) => {
                    let delta = ts_ms(&s.until.expect("an until")) - before;
                    assert!(
                        (60_000..65_000).contains(&delta),
                        "until is now + 60 s: {delta}"
                    );
                }
                other => panic!("expected a sleep, got {other:?}"),
            }
        }
        other => panic!("expected step_yielded, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Yielded);
    assert_eq!(after_sleep.load(Ordering::SeqCst), 0);
    server.assert_quiet().await;
}

#[tokio::test]
async fn a_memoized_sleep_goes_on_to_the_result() {
    let (ctx, mut server) = setup(
        vec![memo("nap", 0, "completed", Value::Null, Value::Null)],
        json!({"n": 2}),
    );
    let handler = handler_of(
        Function::new("f").handler(|ctx: Ctx, input: Value| async move {
            ctx.sleep_until("nap", chrono::Utc::now()).await?;
            Ok::<_, FnError>(json!({"doubled": input["n"].as_i64().unwrap_or(0) * 2}))
        }),
    );
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    match server.next_committed().await {
        Payload::JobCompleted(c) => {
            assert_eq!(c.job_id, "job_1");
            assert_eq!(
                crate::wire::payload(c.output.as_ref(), c.output_value.as_ref()),
                json!({"doubled": 4})
            );
        }
        other => panic!("expected job_completed, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Completed);
}

#[tokio::test]
async fn wait_for_event_encodes_its_filter_and_returns_the_memoized_event() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let before = chrono::Utc::now().timestamp_millis();
    let mut wait = Box::pin(
        ctx.wait_for_event(
            "reply",
            WaitForEvent::new("order.replied")
                .match_path("data.order_id")
                .timeout(Duration::from_secs(90)),
        ),
    );
    // Drive the step until its yield reaches the server and is committed.
    let sent = tokio::select! {
        payload = server.next_committed() => payload,
        ended = &mut wait => panic!("the step ended before its yield was committed: {ended:?}"),
    };
    match sent {
        Payload::StepYielded(y) => {
            assert_eq!(y.step_id, "run_1:reply:0");
            match y.yield_info {
                Some(YieldInfo::WaitEvent(mut w)) => {
                    // The timeout travels as a deadline: now + 90 s.
                    let deadline = w.timeout.take().expect("a deadline");
                    let delta = ts_ms(&deadline) - before;
                    assert!(
                        (90_000..95_000).contains(&delta),
                        "the deadline is now + 90 s: {delta}"
                    );
                    assert_eq!(
                        w,
                        pb::WaitEventYield {
                            event_name: "order.replied".into(),
                            match_expression: "data.order_id".into(),
                            match_value: String::new(),
                            timeout: None,
                            payload_json: Vec::new(),
                        }
                    );
                }
                other => panic!("expected a wait_event, got {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    // Once the yield is committed the step never resolves: polled with the commit answer
    // already waiting, it stays pending (the handler goes no further).
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx))).await;
    assert!(
        polled.is_pending(),
        "the step resolved after its yield: {polled:?}"
    );
    drop(wait);

    let event = json!({"id": "evt_2", "name": "order.replied", "data": {"order_id": 7}});
    let (ctx, _server) = setup(
        vec![memo("reply", 0, "completed", event.clone(), Value::Null)],
        json!({}),
    );
    let got = ctx
        .wait_for_event("reply", WaitForEvent::new("order.replied"))
        .await
        .expect("memoized");
    assert_eq!(got, Some(event));
}

#[tokio::test]
async fn invoke_encodes_the_child_and_returns_its_output_or_failure() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.invoke::<Value, _>(
                "child",
                Invoke::new("resize", json!({"w": 10})).timeout(Duration::from_secs(5)),
            )
            .await
        }
    });
    match server.next_committed().await {
        Payload::StepYielded(y) => {
            assert_eq!(y.step_id, "run_1:child:0");
            match y.yield_info {
                Some(YieldInfo::InvokeFunction(i)) => {
                    assert_eq!(i.function_id, "resize");
                    assert_eq!(
                        serde_json::from_slice::<Value>(&i.input_json).expect("JSON"),
                        json!({"w": 10})
                    );
                    assert_eq!(i.invoke_timeout_ms, 5_000);
                }
                other => panic!("expected invoke, got {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    task.abort();

    let (ctx, _server) = setup(
        vec![
            memo(
                "child",
                0,
                "completed",
                json!({"url": "x.png"}),
                Value::Null,
            ),
            memo(
                "child",
                1,
                "failed",
                Value::Null,
                json!({"message": "invoked function 'resize' failed", "child_run_id": "run_9", "retryable": false}),
            ),
            memo(
                "spawn",
                0,
                "completed",
                json!({"run_id": "run_10"}),
                Value::Null,
            ),
        ],
        json!({}),
    );
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Out {
        url: String,
    }
    let out: Out = ctx
        .invoke("child", Invoke::new("resize", ()))
        .await
        .expect("memoized");
    assert_eq!(out.url, "x.png");
    let e = ctx
        .invoke::<Out, _>("child", Invoke::new("resize", ()))
        .await
        .expect_err("the child failed");
    assert!(!e.is_retryable());
    assert_eq!(e.error_code(), Some("INVOKE_FAILED"));
    assert_eq!(
        e.error_details().and_then(|d| d["child_run_id"].as_str()),
        Some("run_9")
    );
    let child = ctx
        .invoke_async("spawn", Invoke::new("resize", ()))
        .await
        .expect("memoized");
    assert_eq!(child, "run_10");
}

#[tokio::test]
async fn invoke_async_yields_its_own_kind() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.invoke_async("spawn", Invoke::new("report", json!([1, 2])))
                .await
        }
    });
    match server.next_committed().await {
        Payload::StepYielded(y) => match y.yield_info {
            Some(YieldInfo::InvokeFunctionAsync(i)) => {
                assert_eq!(y.step_id, "run_1:spawn:0");
                assert_eq!(i.function_id, "report");
                assert_eq!(i.input_json, b"[1,2]");
            }
            other => panic!("expected invoke_async, got {other:?}"),
        },
        other => panic!("unexpected {other:?}"),
    }
    task.abort();
}

#[tokio::test]
async fn a_stale_step_commit_ends_the_invocation_silently() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        ctx.run("a", || async { Ok(1) }).await?;
        Ok::<_, FnError>(json!("done"))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    let payload = server.next().await;
    assert!(matches!(payload, Payload::StepCompleted(_)));
    server.answer(
        &ack_key(&payload).expect("a report"),
        false,
        "STALE_EXECUTION",
    );
    assert_eq!(invocation.await.expect("joined"), Ended::Stale);
    server.assert_quiet().await;
}

#[tokio::test]
async fn a_closed_stream_abandons_the_invocation() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        ctx.run("a", || async { Ok(1) }).await?;
        Ok::<_, FnError>(json!("done"))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    assert!(matches!(server.next().await, Payload::StepCompleted(_)));
    server.link.close();
    assert_eq!(invocation.await.expect("joined"), Ended::Abandoned);
    assert_eq!(server.link.pending_requests(), 0);
}

#[tokio::test]
async fn a_refused_yield_is_an_error_the_handler_sees() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        match ctx.wait_for_event("w", WaitForEvent::new("")).await {
            Err(e) => Ok::<_, FnError>(json!(e.error_code())),
            Ok(_) => Ok(json!("waited")),
        }
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    let payload = server.next().await;
    assert!(matches!(payload, Payload::StepYielded(_)));
    server.answer(
        &ack_key(&payload).expect("a report"),
        false,
        "step_yielded.wait_event.event_name is required",
    );
    match server.next_committed().await {
        Payload::JobCompleted(c) => assert_eq!(
            crate::wire::payload(c.output.as_ref(), c.output_value.as_ref()),
            json!("YIELD_REFUSED")
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Completed);
}

#[tokio::test]
async fn errors_and_panics_become_job_failed() {
    let cases: Vec<(Handler, bool, &str, i64)> = vec![
        (
            handler_of(Function::new("f").handler(|_: Ctx, _: Value| async move {
                Err::<Value, _>(
                    FnError::retryable("rate limited")
                        .code("RATE_LIMITED")
                        .retry_after(Duration::from_millis(1_500)),
                )
            })),
            true,
            "RATE_LIMITED",
            1_500,
        ),
        (
            handler_of(Function::new("f").handler(|_: Ctx, _: Value| async move {
                Err::<Value, _>(FnError::non_retryable("bad order"))
            })),
            false,
            "",
            0,
        ),
        (
            handler_of(Function::new("f").handler(|_: Ctx, _: Value| async move {
                let parsed: Value = serde_json::from_str("{")?;
                Ok::<_, FnError>(parsed)
            })),
            true,
            "",
            0,
        ),
        (
            handler_of(
                Function::new("f").handler(|_: Ctx, input: Value| async move {
                    if input.is_object() {
                        panic!("boom");
                    }
                    Ok::<_, FnError>(input)
                }),
            ),
            true,
            "PANIC",
            0,
        ),
        (
            handler_of(
                Function::new("f").handler(|_: Ctx, n: u32| async move { Ok::<_, FnError>(n) }),
            ),
            false,
            "INVALID_INPUT",
            0,
        ),
    ];
    for (handler, retryable, code, retry_after_ms) in cases {
        let (ctx, mut server) = setup(Vec::new(), json!({"not": "a number"}));
        let invocation = tokio::spawn(invocation::invoke(ctx, handler));
        match server.next_committed().await {
            Payload::JobFailed(f) => {
                assert_eq!(f.job_id, "job_1");
                assert_eq!((f.execution_seq, f.lease_token.as_str()), (3, "lease"));
                let error = f.error.expect("an error");
                assert_eq!(error.retryable, retryable, "{error:?}");
                assert_eq!(error.code, code, "{error:?}");
                assert_eq!(error.retry_after_ms, retry_after_ms, "{error:?}");
                assert!(!error.message.is_empty());
            }
            other => panic!("expected job_failed, got {other:?}"),
        }
        assert_eq!(invocation.await.expect("joined"), Ended::Failed);
    }
}

#[tokio::test]
async fn a_cancelled_invocation_stops_at_its_next_await() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let ending = ctx.ending().clone();
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        ctx.run("slow", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(1)
        })
        .await?;
        Ok::<_, FnError>(json!("done"))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    // The handler is inside its step once the step started.
    server.expect_started("run_1:slow:0").await;
    ending.end(Ended::Cancelled);
    assert_eq!(invocation.await.expect("joined"), Ended::Cancelled);
    server.assert_quiet().await;
}

fn step_of(payload: Payload) -> pb::StepCompleted {
    match payload {
        Payload::StepCompleted(s) => s,
        other => panic!("expected step_completed, got {other:?}"),
    }
}

#[tokio::test]
async fn step_names_are_escaped_in_ids() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.run("a:b\\c", || async { Ok(1) }).await }
    });
    assert_eq!(
        step_of(server.next_committed().await).step_id,
        "run_1:a\\:b\\\\c:0"
    );
    assert_eq!(task.await.expect("joined"), Ok(1));
}

#[tokio::test]
async fn parallel_branches_number_their_steps_in_their_own_scope() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            ctx.parallel(
                "fan",
                (0..3).map(|i| {
                    move |ctx: Ctx| async move {
                        let doubled: i32 = ctx.run("double", || async move { Ok(i * 2) }).await?;
                        Ok(doubled)
                    }
                }),
            )
            .await
        }
    });
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        ids.push(step_of(server.next_committed().await).step_id);
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "run_1:fan:0:double:0",
            "run_1:fan:1:double:0",
            "run_1:fan:2:double:0"
        ]
    );
    assert_eq!(task.await.expect("joined"), Ok(vec![0, 2, 4]));
}

#[tokio::test]
async fn parallel_replays_memoized_branches_and_refuses_a_reused_name() {
    let memoized = vec![
        pb::CompletedStep {
            step_id: format!("{RUN}:fan:0:double:0"),
            name: "double".into(),
            status: "completed".into(),
            output_value: Some(crate::wire::to_proto(&json!(10))),
            ..Default::default()
        },
        pb::CompletedStep {
            step_id: format!("{RUN}:fan:1:double:0"),
            name: "double".into(),
            status: "completed".into(),
            output_value: Some(crate::wire::to_proto(&json!(12))),
            ..Default::default()
        },
    ];
    let (ctx, mut server) = setup(memoized, json!({}));
    let branch = |ctx: Ctx| async move {
        ctx.run("double", || async {
            Err::<i32, _>(FnError::retryable("ran again"))
        })
        .await
    };
    let outputs = ctx.parallel("fan", [branch, branch]).await;
    assert_eq!(outputs, Ok(vec![10, 12]));
    let again = ctx.parallel("fan", [branch]).await;
    assert_eq!(
        again.expect_err("a reused name").error_code(),
        Some("INVALID_STEP")
    );
    server.assert_quiet().await;
}

#[tokio::test]
async fn a_waiting_branch_lets_the_started_branches_commit_before_the_job_is_handed_back() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let mut rx = Some(rx);
        let branches = (0..2).map(|i| {
            let tx = if i == 0 { tx.take() } else { None };
            let rx = if i == 1 { rx.take() } else { None };
            move |ctx: Ctx| async move {
                if let Some(tx) = tx {
                    // Branch 0 waits while branch 1 is still inside its step.
                    let _ = tx.send(());
                    ctx.sleep("nap", Duration::from_secs(60)).await?;
                    return Ok(0);
                }
                ctx.run("work", || async move {
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                    Ok(1)
                })
                .await
            }
        });
        let out: Vec<i32> = ctx.parallel("fan", branches).await?;
        Ok::<_, FnError>(json!(out))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    assert_eq!(
        step_of(server.next_committed().await).step_id,
        "run_1:fan:1:work:0"
    );
    match server.next_committed().await {
        Payload::StepYielded(y) => {
            assert_eq!(y.step_id, "run_1:fan:0:nap:0");
            assert!(matches!(y.yield_info, Some(YieldInfo::Sleep(_))));
        }
        other => panic!("expected step_yielded, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Yielded);
    server.assert_quiet().await;
}

#[tokio::test]
async fn parallel_fails_fast_with_the_first_error_and_settled_collects_them() {
    let (ctx, _server) = setup(Vec::new(), json!({}));
    let started = Arc::new(AtomicUsize::new(0));
    let branches = |started: Arc<AtomicUsize>| {
        (0..4).map(move |i| {
            let started = started.clone();
            move |_ctx: Ctx| async move {
                started.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    Err(FnError::retryable(format!("branch {i} failed")))
                } else {
                    Ok(i)
                }
            }
        })
    };
    let failed = ctx
        .parallel(
            crate::Parallel::new("one-at-a-time").concurrency(1),
            branches(started.clone()),
        )
        .await;
    assert_eq!(failed.expect_err("fails").message(), "branch 1 failed");
    assert_eq!(
        started.load(Ordering::SeqCst),
        2,
        "no branch starts after the failure"
    );
    let settled = ctx
        .parallel_settled("all", branches(started.clone()))
        .await
        .expect("no wait");
    assert_eq!(settled.len(), 4);
    assert!(settled[1].is_err());
    assert_eq!(settled[3], Ok(3));
}

#[tokio::test]
async fn a_final_failure_runs_the_compensations_newest_first_and_reports_them() {
    let (ctx, mut server) = setup(
        vec![memo(
            "compensate:reserve",
            0,
            "completed",
            Value::Null,
            Value::Null,
        )],
        json!({}),
    );
    let undone = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = handler_of(Function::new("f").handler({
        let undone = undone.clone();
        move |ctx: Ctx, _: Value| {
            let undone = undone.clone();
            async move {
                for step in ["reserve", "charge", "ship"] {
                    let undone = undone.clone();
                    ctx.compensate(step, move || async move {
                        undone.lock().expect("lock").push(step);
                        if step == "ship" {
                            return Err(FnError::retryable("carrier down"));
                        }
                        Ok(())
                    });
                }
                Err::<Value, _>(FnError::non_retryable("card declined").code("DECLINED"))
            }
        }
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    match server.next_committed().await {
        Payload::JobFailed(f) => {
            assert_eq!(f.error.expect("an error").code, "DECLINED");
            let steps: Vec<(String, String, String, String)> = f
                .steps
                .into_iter()
                .map(|s| (s.id, s.r#type, s.status, s.compensation_for))
                .collect();
            // `reserve`'s undo completed in an earlier dispatch: not run again.
            assert_eq!(
                steps,
                [
                    (
                        "run_1:compensate:ship:0".to_owned(),
                        "compensate".to_owned(),
                        "failed".to_owned(),
                        "ship".to_owned()
                    ),
                    (
                        "run_1:compensate:charge:0".to_owned(),
                        "compensate".to_owned(),
                        "completed".to_owned(),
                        "charge".to_owned()
                    ),
                ]
            );
        }
        other => panic!("expected job_failed, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Failed);
    assert_eq!(*undone.lock().expect("lock"), ["ship", "charge"]);
}

#[tokio::test]
async fn a_retryable_failure_before_the_last_attempt_runs_no_compensation() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        ctx.compensate("charge", || async {
            panic!("must not run before the last attempt")
        });
        Err::<Value, _>(FnError::retryable("flaky"))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    match server.next_committed().await {
        Payload::JobFailed(f) => {
            assert!(f.error.expect("an error").retryable);
            assert!(f.steps.is_empty());
        }
        other => panic!("expected job_failed, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Failed);
}

#[tokio::test]
async fn a_compensation_cannot_wait() {
    let (ctx, mut server) = setup(Vec::new(), json!({}));
    let handler = handler_of(Function::new("f").handler(|ctx: Ctx, _: Value| async move {
        let undo_ctx = ctx.clone();
        ctx.compensate("charge", move || async move {
            undo_ctx.sleep("later", Duration::from_secs(1)).await
        });
        Err::<Value, _>(FnError::non_retryable("boom"))
    }));
    let invocation = tokio::spawn(invocation::invoke(ctx, handler));
    match server.next_committed().await {
        Payload::JobFailed(f) => {
            assert_eq!(f.steps.len(), 1);
            assert_eq!(f.steps[0].status, "failed");
            let error = f.steps[0].error.as_ref().expect("an error");
            assert!(error.message.contains("cannot wait"), "{error:?}");
        }
        other => panic!("expected job_failed, got {other:?}"),
    }
    assert_eq!(invocation.await.expect("joined"), Ended::Failed);
}

#[tokio::test]
async fn a_memoized_publish_returns_the_stored_message_without_publishing() {
    let (ctx, mut server) = setup(
        vec![memo(
            "publish:orders",
            0,
            "completed",
            json!({"eventId": "evt_9", "sequence": 7}),
            Value::Null,
        )],
        json!({}),
    );
    let published = ctx
        .publish("orders", json!({"id": 1}))
        .await
        .expect("memoized");
    assert_eq!(
        (published.event_id.as_str(), published.sequence),
        ("evt_9", 7)
    );
    // The next publish is not memoized: the unreachable server is a retryable failure.
    let e = ctx
        .publish("orders", json!({"id": 2}))
        .await
        .expect_err("no server");
    assert!(e.is_retryable());
    assert_eq!(e.error_code(), Some("PUBLISH_FAILED"));
    // Only the unmemoized publish started; its retryable failure is not recorded.
    let started = server.expect_started("run_1:publish:orders:1").await;
    assert_eq!(started.name, "publish:orders");
    server.assert_quiet().await;
}
