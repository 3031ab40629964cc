//! The Rust SDK (`ironflow-sdk`) end to end against a real server on both backends: steps
//! memoized across a worker process killed with SIGKILL, durable sleep, wait_for_event with a
//! match, invoke and invoke_async, retries that skip completed steps, non-retryable failures,
//! cancel while a step runs, and the saga shape: compensations, a `parallel` fan-out whose
//! branch sleeps, and a publish step.
//!
//! The SIGKILL test runs its workers as child processes: this test binary again, entering
//! `worker_process` (which does nothing unless `IRONFLOW_SDK_TEST_WORKER` is set).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Backend, TestServer, raw_count};
use ironflow_sdk::{
    CancellationToken, Client, Ctx, FnError, Function, Invoke, RetryPolicy, Run, RunStatus,
    WaitForEvent, Worker,
};
use serde_json::{Value, json};

const WORKER_ENV: &str = "IRONFLOW_SDK_TEST_WORKER";

fn fast_retry(max_attempts: i32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay_ms: 50,
        backoff_factor: 1.0,
        max_delay_ms: 50,
    }
}

/// Polls the run until it reaches a terminal status.
async fn finished(client: &Client, run_id: &str) -> Run {
    common::eventually(
        &format!("run {run_id} finishes"),
        Duration::from_secs(30),
        || async {
            let run = client.run(run_id).await.expect("run readable");
            run.status.is_terminal().then_some(run)
        },
    )
    .await
}

/// A worker serving `functions` in this process until the returned token is cancelled.
fn serve(
    server: &TestServer,
    functions: Vec<Function>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let mut builder = Worker::builder(&server.base, &server.key).concurrency(8);
    for f in functions {
        builder = builder.function(f);
    }
    let worker = builder.build().expect("worker builds");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        worker.run(token).await.expect("worker runs until stopped");
    });
    (stop, task)
}

fn client(server: &TestServer) -> Client {
    Client::new(&server.base, &server.key).expect("client")
}

async fn first_run(client: &Client, event: &str, data: Value) -> String {
    let emitted = client.emit(event, data).await.expect("emitted");
    emitted.run_ids.first().cloned().expect("a run started")
}

/// A sleep, a matched wait, an invoke and an invoke_async, each resumed with its memo.
async fn yields_resume_with_memos(backend: Backend) {
    let server = TestServer::start(backend).await;
    let body_runs = Arc::new(AtomicU32::new(0));
    let counted = body_runs.clone();
    let flow = Function::new("k-flow")
        .trigger("k.flow")
        .handler(move |ctx: Ctx, input: Value| {
            let counted = counted.clone();
            async move {
                let a: i64 = ctx
                    .run("a", || async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok(input["n"].as_i64().unwrap_or(0) + 1)
                    })
                    .await?;
                ctx.sleep("nap", Duration::from_millis(200)).await?;
                let approval = ctx
                    .wait_for_event(
                        "approval",
                        WaitForEvent::new("k.approved")
                            .match_path("data.order")
                            .timeout(Duration::from_secs(60)),
                    )
                    .await?;
                let child: Value = ctx
                    .invoke("child", Invoke::new("k-child", json!({"x": a})))
                    .await?;
                let spawned = ctx
                    .invoke_async("spawn", Invoke::new("k-child", json!({"x": 100})))
                    .await?;
                Ok::<_, FnError>(
                    json!({"a": a, "by": approval.map(|e| e["data"]["by"].clone()),
                                        "child": child, "spawned": spawned}),
                )
            }
        });
    let child = Function::new("k-child").handler(|ctx: Ctx, input: Value| async move {
        ctx.run("double", || async move {
            Ok(input["x"].as_i64().unwrap_or(0) * 2)
        })
        .await
    });
    let (stop, task) = serve(&server, vec![flow, child]);
    let c = client(&server);
    // The worker registers its functions when it connects.
    let run_id = wait_for_registration_with(&c, "k.flow", json!({"n": 4, "order": "o-1"})).await;
    // Wait until the run is parked on the approval, then send a non-matching and a matching event.
    common::eventually("the wait is recorded", Duration::from_secs(20), || async {
        let steps = server
            .get_json(&format!("/api/v1/runs/{run_id}/steps"))
            .await
            .to_string();
        (steps.contains("approval") && steps.contains("waiting")).then_some(())
    })
    .await;
    c.emit("k.approved", json!({"order": "o-2", "by": "mallory"}))
        .await
        .expect("emitted");
    c.emit("k.approved", json!({"order": "o-1", "by": "ann"}))
        .await
        .expect("emitted");
    let run = finished(&c, &run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let output = run.output.clone().expect("output");
    assert_eq!(output["a"], 5);
    assert_eq!(output["by"], "ann");
    assert_eq!(output["child"], 10);
    let spawned = output["spawned"].as_str().expect("child run id").to_owned();
    assert_eq!(finished(&c, &spawned).await.output, Some(json!(200)));
    assert_eq!(
        body_runs.load(Ordering::SeqCst),
        1,
        "step `a` ran once across five dispatches"
    );
    stop.cancel();
    task.await.expect("worker stopped");
    server.stop().await;
}

/// A retryable failure retries the run with completed steps skipped; a non-retryable one ends
/// it at once.
async fn retries_skip_completed_steps(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first_runs = Arc::new(AtomicU32::new(0));
    let attempts = Arc::new(AtomicU32::new(0));
    let (f, a) = (first_runs.clone(), attempts.clone());
    let flaky = Function::new("k-flaky")
        .trigger("k.flaky")
        .retry(fast_retry(3))
        .handler(move |ctx: Ctx, _input: Value| {
            let (f, a) = (f.clone(), a.clone());
            async move {
                ctx.run("first", || async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(1)
                })
                .await?;
                if a.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(FnError::retryable("transient").code("E_TRANSIENT"));
                }
                Ok::<_, FnError>(ctx.attempt())
            }
        });
    let fatal = Function::new("k-fatal")
        .trigger("k.fatal")
        .retry(fast_retry(5))
        .handler(|_ctx: Ctx, _input: Value| async move {
            Err::<Value, _>(FnError::non_retryable("bad input").code("E_BAD"))
        });
    let (stop, task) = serve(&server, vec![flaky, fatal]);
    let c = client(&server);
    let flaky_run = wait_for_registration(&c, "k.flaky").await;
    let run = finished(&c, &flaky_run).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!(2)), "completed on attempt 2");
    assert_eq!(
        first_runs.load(Ordering::SeqCst),
        1,
        "the step is not re-run"
    );

    let fatal_run = first_run(&c, "k.fatal", json!({})).await;
    let run = finished(&c, &fatal_run).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.attempt, 1, "a non-retryable error is not retried");
    let error = run.error.clone().expect("error");
    assert_eq!(error["code"], "E_BAD", "{error}");
    stop.cancel();
    task.await.expect("worker stopped");
    server.stop().await;
}

/// A run cancelled while its step runs is dropped from the worker (the step's end is never
/// committed), and the worker goes on serving.
async fn cancel_while_running(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let finished_steps = Arc::new(AtomicU32::new(0));
    let done = finished_steps.clone();
    let slow = Function::new("k-slow")
        .trigger("k.slow")
        .handler(move |ctx: Ctx, input: Value| {
            let (started_tx, done) = (started_tx.clone(), done.clone());
            async move {
                let _ = started_tx.send(ctx.run_id().to_owned());
                if input["block"] == true {
                    ctx.run("forever", || async move {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        Ok(0)
                    })
                    .await?;
                }
                Ok::<_, FnError>(input)
            }
        });
    let (stop, task) = serve(&server, vec![slow]);
    let c = client(&server);
    let run_id = wait_for_registration_with(&c, "k.slow", json!({"block": true})).await;
    let started = tokio::time::timeout(Duration::from_secs(15), started_rx.recv())
        .await
        .expect("the handler started")
        .expect("channel open");
    assert_eq!(started, run_id);
    let cancelled = c.cancel(&run_id).await.expect("cancelled");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    // The same worker still serves new runs.
    let next = first_run(&c, "k.slow", json!({"block": false})).await;
    let run = finished(&c, &next).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(finished(&c, &run_id).await.status, RunStatus::Cancelled);
    assert_eq!(finished_steps.load(Ordering::SeqCst), 0);
    stop.cancel();
    task.await.expect("worker stopped");
    server.stop().await;
}

async fn wait_for_registration(c: &Client, event: &str) -> String {
    wait_for_registration_with(c, event, json!({})).await
}

/// Emits until a run starts (the worker registers its functions when it connects).
async fn wait_for_registration_with(c: &Client, event: &str, data: Value) -> String {
    common::eventually(
        "the worker registers its functions",
        Duration::from_secs(10),
        || async {
            let emitted = c.emit(event, data.clone()).await.expect("emitted");
            emitted.run_ids.first().cloned()
        },
    )
    .await
}

// ── SIGKILL: a worker process dies mid-step ─────────────────────────────────────────────────────

/// The child side: serves `k-kill` until killed. Steps append their names to the log file;
/// step `b` blocks forever while `<log>.block` exists.
#[test]
fn worker_process() {
    let (Ok(url), Ok(key), Ok(log)) = (
        std::env::var(WORKER_ENV),
        std::env::var("IRONFLOW_SDK_TEST_KEY"),
        std::env::var("IRONFLOW_SDK_TEST_LOG"),
    ) else {
        return; // an ordinary test run: nothing to do
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let log = PathBuf::from(log);
        let kill =
            Function::new("k-kill")
                .trigger("k.kill")
                .handler(move |ctx: Ctx, _input: Value| {
                    let log = log.clone();
                    async move {
                        for name in ["a", "b", "c"] {
                            let log = log.clone();
                            ctx.run(name, || async move {
                                append(&log, name);
                                let block = log.with_extension("block");
                                while name == "b" && block.exists() {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                Ok(name.to_owned())
                            })
                            .await?;
                        }
                        Ok::<_, FnError>("done")
                    }
                });
        let worker = Worker::builder(url, key)
            .concurrency(2)
            .function(kill)
            .build()
            .expect("worker builds");
        let _ = worker.run(CancellationToken::new()).await;
    });
}

fn append(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log opens");
    writeln!(f, "{line}").expect("log written");
}

fn spawn_worker(server: &TestServer, log: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "worker_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, &server.base)
        .env("IRONFLOW_SDK_TEST_KEY", &server.key)
        .env("IRONFLOW_SDK_TEST_LOG", log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker process starts")
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Step `a` is committed, the worker process is killed (SIGKILL) inside step `b`; a new worker
/// process finishes the run without running `a` again.
async fn memoized_across_sigkill(backend: Backend) {
    let server = TestServer::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("steps.log");
    std::fs::write(log.with_extension("block"), b"").expect("block file");
    let mut first = spawn_worker(&server, &log);
    let c = client(&server);
    let run_id = wait_for_registration(&c, "k.kill").await;
    common::eventually("the worker reaches step b", Duration::from_secs(20), || {
        std::future::ready((log_lines(&log) == ["a", "b"]).then_some(()))
    })
    .await;
    // SAFETY of the claim: `a` was committed before `b` started (the SDK waits for Committed).
    let steps = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await
        .to_string();
    assert!(steps.contains(&format!("{run_id}:a:0")), "{steps}");
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    std::fs::remove_file(log.with_extension("block")).expect("unblock");
    let mut second = spawn_worker(&server, &log);
    let run = finished(&c, &run_id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.output, Some(json!("done")));
    assert_eq!(
        run.attempt, 1,
        "a killed worker's job is handed back, not failed"
    );
    assert_eq!(
        log_lines(&log),
        ["a", "b", "b", "c"],
        "a ran once; b, never committed, ran again; c once"
    );
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    server.stop().await;
}

/// The order-saga shape end to end: two steps, each followed by its undo; a `parallel` packing
/// fan-out whose first branch sleeps (the other branches commit first, and on resume every
/// branch replays from its memo); a publish. A failure after all that (on the resumed
/// dispatch, so the undos were registered again by the replay) runs the undos newest first and
/// records them as `compensate:` steps.
async fn saga_compensates_fans_out_and_publishes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let labels = Arc::new(AtomicU32::new(0));
    let undone = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (labels_in, undone_in) = (labels.clone(), undone.clone());
    let saga = Function::new("k-saga")
        .trigger("k.order")
        .handler(move |ctx: Ctx, input: Value| {
            let (labels, undone) = (labels_in.clone(), undone_in.clone());
            async move {
                for step in ["reserve", "charge"] {
                    let _: String = ctx
                        .run(step, || async move { Ok(format!("{step}-ok")) })
                        .await?;
                    let undone = undone.clone();
                    ctx.compensate(step, move || async move {
                        undone.lock().expect("lock").push(step.to_owned());
                        Ok(())
                    });
                }
                let items: Vec<String> =
                    serde_json::from_value(input["items"].clone()).map_err(FnError::from)?;
                let branches = items.into_iter().enumerate().map(|(i, item)| {
                    let labels = labels.clone();
                    move |ctx: Ctx| async move {
                        let label: String = ctx
                            .run("label", || async move {
                                labels.fetch_add(1, Ordering::SeqCst);
                                Ok(format!("{item}-packed"))
                            })
                            .await?;
                        if i == 0 {
                            ctx.sleep("cool", Duration::from_millis(100)).await?;
                        }
                        Ok(label)
                    }
                });
                let packed: Vec<String> = ctx.parallel("pack", branches).await?;
                let published = ctx
                    .publish(
                        "k.shipped",
                        json!({"order": input["order"], "packed": packed}),
                    )
                    .await?;
                if input["fail"] == true {
                    return Err(FnError::non_retryable("the carrier refused").code("E_CARRIER"));
                }
                Ok(json!({"packed": packed, "event_id": published.event_id}))
            }
        });
    let (stop, task) = serve(&server, vec![saga]);
    let c = client(&server);
    let items = json!(["a", "b", "c"]);
    let ok_run =
        wait_for_registration_with(&c, "k.order", json!({"order": "o-1", "items": items})).await;
    let run = finished(&c, &ok_run).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let output = run.output.clone().expect("output");
    assert_eq!(
        output["packed"],
        json!(["a-packed", "b-packed", "c-packed"])
    );
    assert_eq!(
        labels.load(Ordering::SeqCst),
        3,
        "each branch's step ran once across the sleep"
    );
    assert!(
        undone.lock().expect("lock").is_empty(),
        "no undo on success"
    );
    let shipped = "SELECT COUNT(*) FROM messages WHERE topic = 'k.shipped'";
    assert_eq!(raw_count(&server.url, shipped).await, 1);

    let failed_run = first_run(
        &c,
        "k.order",
        json!({"order": "o-2", "items": items, "fail": true}),
    )
    .await;
    let run = finished(&c, &failed_run).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.error.clone().expect("error")["code"], "E_CARRIER");
    assert_eq!(*undone.lock().expect("lock"), ["charge", "reserve"]);
    assert_eq!(raw_count(&server.url, shipped).await, 2);
    let steps = server
        .get_json(&format!("/api/v1/runs/{failed_run}/steps"))
        .await;
    let compensations: Vec<(String, String, String)> = steps["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["type"] == "compensate")
        .map(|s| {
            (
                s["step_id"].as_str().unwrap_or_default().to_owned(),
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        compensations,
        [
            (
                format!("{failed_run}:compensate:charge:0"),
                "compensate:charge".to_owned(),
                "completed".to_owned()
            ),
            (
                format!("{failed_run}:compensate:reserve:0"),
                "compensate:reserve".to_owned(),
                "completed".to_owned()
            ),
        ],
        "{steps}"
    );
    stop.cancel();
    task.await.expect("worker stopped");
    server.stop().await;
}

both_backends! {
    saga => saga_compensates_fans_out_and_publishes;
    yields => yields_resume_with_memos;
    retries => retries_skip_completed_steps;
    cancel => cancel_while_running;
    sigkill => memoized_across_sigkill;
}
