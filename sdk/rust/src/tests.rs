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
use pb::worker_message::Kind;

const RUN: &str = "run_1";

/// The server's side of an in-memory stream.
struct FakeServer {
    rx: mpsc::Receiver<pb::WorkerMessage>,
    link: Arc<Link>,
}

impl FakeServer {
    async fn next(&mut self) -> Kind {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .kind
            .expect("a kind")
    }

    /// Nothing more was sent (after letting the sender run).
    async fn assert_quiet(&mut self) {
        tokio::task::yield_now().await;
        if let Ok(m) = self.rx.try_recv() {
            panic!("unexpected message {m:?}");
        }
    }

    fn answer(&self, request_id: u64, ok: bool, stale: bool, error: &str) {
        self.link.resolve(pb::Committed {
            request_id,
            ok,
            stale,
            error: error.into(),
        });
    }

    fn commit(&self, request_id: u64) {
        self.answer(request_id, true, false, "");
    }

    /// Receives the next message, commits it if it is a request, and returns it.
    async fn next_committed(&mut self) -> Kind {
        let kind = self.next().await;
        if let Some(id) = request_id(&kind) {
            self.commit(id);
        }
        kind
    }
}

fn request_id(kind: &Kind) -> Option<u64> {
    match kind {
        Kind::StepCompleted(s) => Some(s.request_id),
        Kind::JobYielded(y) => Some(y.request_id),
        Kind::JobCompleted(c) => Some(c.request_id),
        Kind::JobFailed(f) => Some(f.request_id),
        _ => None,
    }
}

fn memo(name: &str, n: u32, status: &str, output: Value, error: Value) -> pb::MemoStep {
    let text = |v: Value| {
        if v.is_null() {
            String::new()
        } else {
            v.to_string()
        }
    };
    pb::MemoStep {
        step_id: format!("{RUN}:{name}:{n}"),
        name: name.into(),
        status: status.into(),
        output_json: text(output),
        error_json: text(error),
    }
}

fn setup(steps: Vec<pb::MemoStep>, data: Value) -> (Ctx, FakeServer) {
    let (tx, rx) = mpsc::channel(64);
    let link = Arc::new(Link::new(tx));
    let job = Job::from_assignment(pb::JobAssignment {
        fence: Some(pb::JobFence {
            job_id: "job_1".into(),
            execution_seq: 3,
            lease_token: "lease".into(),
        }),
        run_id: RUN.into(),
        function_id: "f".into(),
        attempt: 2,
        max_attempts: 3,
        event_json: json!({"id": "evt_1", "name": "order.created", "data": data}).to_string(),
        steps,
        secrets: [("API_KEY".to_owned(), "s3cret".to_owned())].into(),
        ..Default::default()
    });
    // Nothing listens there: a test that publishes gets a connection error.
    let client = crate::Client::new("http://127.0.0.1:9", "key").expect("a client");
    let ctx = Ctx::new(job, link.clone(), Arc::new(Ending::default()), client);
    (ctx, FakeServer { rx, link })
}

fn handler_of(f: Function) -> Handler {
    f.handler.expect("a handler")
}

fn fence_of(kind: &Kind) -> Option<&pb::JobFence> {
    match kind {
        Kind::StepCompleted(s) => s.fence.as_ref(),
        Kind::JobYielded(y) => y.fence.as_ref(),
        Kind::JobCompleted(c) => c.fence.as_ref(),
        Kind::JobFailed(f) => f.fence.as_ref(),
        _ => None,
    }
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
        match server.next_committed().await {
            Kind::StepCompleted(s) => {
                let step = s.step.expect("a step");
                assert!(step.completed);
                assert_eq!(step.r#type, "run");
                assert!(step.started_at_ms > 0 && step.ended_at_ms >= step.started_at_ms);
                ids.push((step.step_id, step.name, step.output_json));
            }
            other => panic!("expected step_completed, got {other:?}"),
        }
    }
    assert_eq!(
        ids,
        [
            ("run_1:a:0".to_owned(), "a".to_owned(), "1".to_owned()),
            ("run_1:b:0".to_owned(), "b".to_owned(), "2".to_owned()),
            ("run_1:a:1".to_owned(), "a".to_owned(), "3".to_owned()),
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
        .map(|k| match k {
            Kind::StepCompleted(s) => s.step.expect("a step").step_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(order, ["run_1:x:1", "run_1:x:0"]);
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
        Kind::StepCompleted(s) => assert_eq!(s.step.expect("step").step_id, "run_1:charge:1"),
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
        Kind::StepCompleted(s) => {
            let step = s.step.expect("step");
            assert_eq!(step.step_id, "run_1:doomed:0");
            assert!(!step.completed);
            assert!(step.output_json.is_empty());
            let error: Value = serde_json::from_str(&step.error_json).expect("error JSON");
            assert_eq!(
                error,
                json!({"message": "no such account", "code": "NO_ACCOUNT", "retryable": false})
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
    let kind = server.next_committed().await;
    let fence = fence_of(&kind).expect("fenced").clone();
    assert_eq!(
        (
            fence.job_id.as_str(),
            fence.execution_seq,
            fence.lease_token.as_str()
        ),
        ("job_1", 3, "lease")
    );
    match kind {
        Kind::JobYielded(y) => {
            assert!(y.steps.is_empty());
            let step = y.r#yield.expect("a yield");
            assert_eq!(step.step_id, "run_1:nap:0");
            match step.kind {
                Some(pb::r#yield::Kind::Sleep(s)) => {
                    let delta = s.until_ms - before;
                    assert!(
                        (60_000..65_000).contains(&delta),
                        "until is now + 60 s: {delta}"
                    );
                }
                other => panic!("expected a sleep, got {other:?}"),
            }
        }
        other => panic!("expected job_yielded, got {other:?}"),
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
        Kind::JobCompleted(c) => {
            assert_eq!(
                serde_json::from_str::<Value>(&c.output_json).expect("JSON"),
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
        kind = server.next_committed() => kind,
        ended = &mut wait => panic!("the step ended before its yield was committed: {ended:?}"),
    };
    match sent {
        Kind::JobYielded(y) => {
            let step = y.r#yield.expect("a yield");
            assert_eq!(step.step_id, "run_1:reply:0");
            assert_eq!(
                step.kind,
                Some(pb::r#yield::Kind::WaitForEvent(pb::WaitForEvent {
                    event: "order.replied".into(),
                    match_path: "data.order_id".into(),
                    match_value: String::new(),
                    timeout_ms: 90_000,
                }))
            );
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
        Kind::JobYielded(y) => {
            let step = y.r#yield.expect("a yield");
            assert_eq!(step.step_id, "run_1:child:0");
            match step.kind {
                Some(pb::r#yield::Kind::Invoke(i)) => {
                    assert_eq!(i.function_id, "resize");
                    assert_eq!(
                        serde_json::from_str::<Value>(&i.input_json).expect("JSON"),
                        json!({"w": 10})
                    );
                    assert_eq!(i.timeout_ms, 5_000);
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
        Kind::JobYielded(y) => match y.r#yield.and_then(|s| s.kind) {
            Some(pb::r#yield::Kind::InvokeAsync(i)) => {
                assert_eq!(i.function_id, "report");
                assert_eq!(i.input_json, "[1,2]");
                assert_eq!(i.timeout_ms, 0);
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
    let kind = server.next().await;
    assert!(matches!(kind, Kind::StepCompleted(_)));
    server.answer(
        request_id(&kind).expect("a request"),
        false,
        true,
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
    assert!(matches!(server.next().await, Kind::StepCompleted(_)));
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
    let kind = server.next().await;
    assert!(matches!(kind, Kind::JobYielded(_)));
    server.answer(
        request_id(&kind).expect("a request"),
        false,
        false,
        "yield.wait_for_event.event is required",
    );
    match server.next_committed().await {
        Kind::JobCompleted(c) => assert_eq!(c.output_json, "\"YIELD_REFUSED\""),
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
            Kind::JobFailed(f) => {
                assert_eq!(f.retryable, retryable, "{f:?}");
                assert_eq!(f.code, code, "{f:?}");
                assert_eq!(f.retry_after_ms, retry_after_ms, "{f:?}");
                assert!(!f.message.is_empty());
                assert_eq!(f.fence.expect("fenced").job_id, "job_1");
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
    tokio::task::yield_now().await;
    ending.end(Ended::Cancelled);
    assert_eq!(invocation.await.expect("joined"), Ended::Cancelled);
    server.assert_quiet().await;
}

fn step_of(kind: Kind) -> pb::StepRecord {
    match kind {
        Kind::StepCompleted(s) => s.step.expect("a step"),
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
        pb::MemoStep {
            step_id: format!("{RUN}:fan:0:double:0"),
            name: "double".into(),
            status: "completed".into(),
            output_json: "10".into(),
            error_json: String::new(),
        },
        pb::MemoStep {
            step_id: format!("{RUN}:fan:1:double:0"),
            name: "double".into(),
            status: "completed".into(),
            output_json: "12".into(),
            error_json: String::new(),
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
        Kind::JobYielded(y) => {
            assert_eq!(y.r#yield.expect("a yield").step_id, "run_1:fan:0:nap:0");
        }
        other => panic!("expected job_yielded, got {other:?}"),
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
        Kind::JobFailed(f) => {
            assert_eq!(f.code, "DECLINED");
            let steps: Vec<(String, String, bool, String)> = f
                .steps
                .into_iter()
                .map(|s| (s.step_id, s.r#type, s.completed, s.compensation_for))
                .collect();
            // `reserve`'s undo completed in an earlier dispatch: not run again.
            assert_eq!(
                steps,
                [
                    (
                        "run_1:compensate:ship:0".to_owned(),
                        "compensate".to_owned(),
                        false,
                        "ship".to_owned()
                    ),
                    (
                        "run_1:compensate:charge:0".to_owned(),
                        "compensate".to_owned(),
                        true,
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
        Kind::JobFailed(f) => {
            assert!(f.retryable);
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
        Kind::JobFailed(f) => {
            assert_eq!(f.steps.len(), 1);
            assert!(!f.steps[0].completed);
            assert!(
                f.steps[0].error_json.contains("cannot wait"),
                "{}",
                f.steps[0].error_json
            );
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
    server.assert_quiet().await;
}
