//! Durable execution at the protocol level on both backends: fencing, lease expiry, retries,
//! sleeps, waits, invokes, concurrency lanes, sync triggers and two servers sharing Postgres.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, FakeWorker, ServerConfig, TestServer, raw_count, step_entry};
use serde_json::{Value, json};

async fn history_kinds(server: &TestServer, id: &str) -> Vec<String> {
    let h: Value = server.get_json(&format!("/api/v1/runs/{id}/history")).await;
    h["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn fenced_results(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "fenced", "triggers": [{"event": "f.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-fence", &["fenced"]).await;
    let run_id = server.emit_runs("f.go", json!({"n": 1})).await.remove(0);
    let job = worker.next_job().await;
    assert_eq!(job["run_id"], run_id.as_str());
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["event"]["data"], json!({"n": 1}));
    let mut forged = job.clone();
    forged["lease_token"] = json!("not-the-token");
    assert_eq!(worker.ack(&forged).await, 409);
    let (status, body) = worker
        .report(&forged, json!({"status": "completed", "output": 1}))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("STALE_EXECUTION"))
    );
    assert_eq!(worker.ack(&job).await, 200);
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "progress", "steps": [step_entry(&run_id, "a", json!("A"))]}),
        )
        .await;
    assert_eq!(status, 200);
    let steps: Value = server
        .get_json(&format!("/api/v1/runs/{run_id}/steps"))
        .await;
    assert_eq!(
        steps["steps"][0]["output"], "A",
        "a checkpointed step is durable when the 2xx arrives"
    );
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "completed", "output": {"ok": true}, "step_offset": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = worker
        .report(
            &job,
            json!({"status": "completed", "output": {"ok": false}}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("STALE_EXECUTION")),
        "a second result is stale"
    );
    let r = server.run_json(&run_id).await;
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"], json!({"ok": true}));
    let kinds = history_kinds(&server, &run_id).await;
    assert_eq!(
        kinds,
        [
            "run.created",
            "run.dispatched",
            "step.completed",
            "run.completed"
        ]
    );
    server.stop().await;
}

async fn expired_leases_move_to_another_worker(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            lease_ttl: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    )
    .await;
    server
        .register_function(json!({"id": "leased", "triggers": [{"event": "l.go"}]}))
        .await;
    let dead = FakeWorker::register(&server, "w-dead", &["leased"]).await;
    let alive = FakeWorker::register(&server, "w-alive", &["leased"]).await;
    let run_id = server.emit_runs("l.go", json!({})).await.remove(0);
    let first = dead.next_job().await;
    assert_eq!(dead.ack(&first).await, 200);
    let (status, _) = dead
        .report(
            &first,
            json!({"status": "progress", "steps": [step_entry(&run_id, "one", json!(1))]}),
        )
        .await;
    assert_eq!(status, 200);
    // The dead worker sends no heartbeat; the held poll is woken when its lease expires.
    let started = Instant::now();
    let second = alive.next_job().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "re-dispatched promptly after expiry"
    );
    assert_eq!(second["run_id"], run_id.as_str());
    assert_eq!(
        second["execution_seq"],
        first["execution_seq"].as_i64().expect("seq") + 1
    );
    assert_eq!(
        second["completed_steps"][0]["output"], 1,
        "the checkpointed step is handed over"
    );
    let (status, _) = dead
        .report(&first, json!({"status": "completed", "output": "late"}))
        .await;
    assert_eq!(status, 409, "the old lease holder is fenced off");
    assert_eq!(alive.ack(&second).await, 200);
    let (status, _) = alive
        .report(&second, json!({"status": "completed", "output": "on time"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.run_json(&run_id).await["output"], "on time");
    server.stop().await;
}

async fn heartbeats_keep_leases(backend: Backend) {
    let server = TestServer::start_with(
        backend,
        ServerConfig {
            lease_ttl: Duration::from_secs(2),
            ..ServerConfig::default()
        },
    )
    .await;
    server
        .register_function(json!({"id": "kept", "triggers": [{"event": "k.go"}]}))
        .await;
    let holder = FakeWorker::register(&server, "w-holder", &["kept"]).await;
    let other = FakeWorker::register(&server, "w-other", &["kept"]).await;
    server.emit_runs("k.go", json!({})).await;
    let job = holder.next_job().await;
    assert_eq!(holder.ack(&job).await, 200);
    for _ in 0..3 {
        let hb = holder
            .http
            .post(format!("{}/api/v1/workers/w-holder/heartbeat", server.base))
            .bearer_auth(&server.key)
            .json(&json!({"worker_id": "w-holder", "active_jobs": 1, "jobs": [{"job_id": job["job_id"], "started_at": "2026-01-01T00:00:00Z"}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(hb.status(), 200);
        assert!(
            other.poll(1, 1).await.is_empty(),
            "a heartbeated lease is not handed out"
        );
    }
    let unknown = holder
        .http
        .post(format!("{}/api/v1/workers/nobody/heartbeat", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"worker_id": "nobody", "jobs": []}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        unknown.status(),
        404,
        "an unknown worker must register again"
    );
    let (status, _) = holder
        .report(&job, json!({"status": "completed", "output": null}))
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn retries_back_off_then_fail(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register_function(json!({"id": "flaky", "triggers": [{"event": "r.go"}], "retry": {"maxAttempts": 3, "initialDelayMs": 200, "backoffFactor": 2}})).await;
    let worker = FakeWorker::register(&server, "w-retry", &["flaky"]).await;
    let run_id = server.emit_runs("r.go", json!({})).await.remove(0);
    let mut dispatched_at = Vec::new();
    for attempt in 1..=3 {
        let job = worker.next_job().await;
        dispatched_at.push(Instant::now());
        assert_eq!(job["attempt"], attempt);
        assert_eq!(job["max_attempts"], 3);
        assert_eq!(worker.ack(&job).await, 200);
        let error =
            json!({"message": format!("boom {attempt}"), "code": "ERROR", "retryable": true});
        let (status, _) = worker
            .report(&job, json!({"status": "failed", "error": error}))
            .await;
        assert_eq!(status, 200);
    }
    let gap1 = dispatched_at[1] - dispatched_at[0];
    let gap2 = dispatched_at[2] - dispatched_at[1];
    assert!(
        gap1 >= Duration::from_millis(180),
        "first retry waits ~200 ms: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(380),
        "second retry waits ~400 ms: {gap2:?}"
    );
    let r = server.run_json(&run_id).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["attempt"], 3);
    assert_eq!(r["error"]["message"], "boom 3");
    let kinds = history_kinds(&server, &run_id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "run.retrying").count(), 2);
    assert!(
        worker.poll(1, 0).await.is_empty(),
        "a failed run is not dispatched again"
    );

    let again = server.emit_runs("r.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    let error = json!({"message": "card declined", "code": "CARD_DECLINED", "retryable": false});
    worker
        .report(&job, json!({"status": "failed", "error": error}))
        .await;
    let r = server.run_json(&again).await;
    assert_eq!(
        (r["status"].as_str(), r["attempt"].as_i64()),
        (Some("failed"), Some(1)),
        "non-retryable fails at once"
    );
    server.stop().await;
}

async fn sleeps_park_and_resume(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "napper", "triggers": [{"event": "s.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-sleep", &["napper"]).await;
    let run_id = server.emit_runs("s.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    worker.ack(&job).await;
    let until = chrono::Utc::now() + chrono::Duration::milliseconds(700);
    let step_id = format!("{run_id}:nap:0");
    let yielded = json!({"status": "yielded", "yield": {"step_id": step_id, "type": "sleep", "until": until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}});
    let (status, _) = worker.report(&job, yielded).await;
    assert_eq!(status, 200);
    assert_eq!(server.run_json(&run_id).await["status"], "waiting");
    let resumed = worker.next_job().await;
    assert!(
        chrono::Utc::now() >= until,
        "not dispatched before the sleep ends"
    );
    assert_eq!(resumed["execution_seq"], 2);
    assert_eq!(resumed["completed_steps"][0]["step_id"], step_id.as_str());
    assert_eq!(resumed["completed_steps"][0]["status"], "completed");
    assert_eq!(resumed["step_sequence_base"], 1);
    worker.ack(&resumed).await;
    worker
        .report(&resumed, json!({"status": "completed", "output": "rested"}))
        .await;
    assert_eq!(server.run_json(&run_id).await["status"], "completed");
    server.stop().await;
}

async fn waits_match_and_time_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "waiter", "triggers": [{"event": "w.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-wait", &["waiter"]).await;
    let run_id = server
        .emit_runs("w.go", json!({"order": 7}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    let step_id = format!("{run_id}:reply:0");
    let wait = json!({"status": "yielded", "yield": {"step_id": step_id, "type": "wait_for_event", "event_filter": {"event": "w.reply", "match": "data.order", "timeout": "30s"}}});
    assert_eq!(worker.report(&job, wait).await.0, 200);
    server.emit_runs("w.reply", json!({"order": 8})).await;
    assert!(
        worker.poll(1, 1).await.is_empty(),
        "another order's reply does not resume the run"
    );
    server
        .emit_runs("w.reply", json!({"order": 7, "ok": true}))
        .await;
    let resumed = worker.next_job().await;
    let row = &resumed["completed_steps"][0];
    assert_eq!(row["step_id"], step_id.as_str());
    assert_eq!(row["output"]["name"], "w.reply");
    assert_eq!(row["output"]["data"], json!({"order": 7, "ok": true}));
    assert!(row["output"]["timestamp"].is_string() && row["output"]["id"].is_string());
    worker
        .report(&resumed, json!({"status": "completed", "output": null}))
        .await;

    let timed = server
        .emit_runs("w.go", json!({"order": 9}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    let wait = json!({"status": "yielded", "yield": {"step_id": format!("{timed}:reply:0"), "type": "wait_for_event", "event_filter": {"event": "w.reply", "match": "data.order", "timeout": "500ms"}}});
    worker.report(&job, wait).await;
    let outcome = common::eventually("the wait times out", Duration::from_secs(10), || async {
        let r = server.run_json(&timed).await;
        (r["status"] != "waiting").then_some(r)
    })
    .await;
    assert_eq!(outcome["status"], "failed");
    assert_eq!(outcome["error"]["code"], "WAIT_TIMEOUT");
    server.stop().await;
}

async fn invokes_resume_the_parent(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "parent", "triggers": [{"event": "p.go"}]}))
        .await;
    server.register_function(json!({"id": "child"})).await;
    let worker = FakeWorker::register(&server, "w-inv", &["parent", "child"]).await;
    let parent = server.emit_runs("p.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    let step_id = format!("{parent}:child:0");
    let invoke = json!({"status": "yielded", "yield": {"step_id": step_id, "type": "invoke_function", "function_id": "child", "input": {"x": 2}, "invoke_timeout_ms": 30000}});
    assert_eq!(worker.report(&job, invoke).await.0, 200);
    let child_job = worker.next_job().await;
    assert_eq!(child_job["function_id"], "child");
    assert_eq!(child_job["event"]["data"], json!({"x": 2}));
    worker
        .report(
            &child_job,
            json!({"status": "completed", "output": {"y": 4}}),
        )
        .await;
    let resumed = worker.next_job().await;
    assert_eq!(resumed["run_id"], parent.as_str());
    assert_eq!(resumed["completed_steps"][0]["output"], json!({"y": 4}));
    // A failing child: the parent's step is failed and non-retryable.
    let step2 = format!("{parent}:child:1");
    let invoke = json!({"status": "yielded", "yield": {"step_id": step2, "type": "invoke_function", "function_id": "child", "input": {}, "invoke_timeout_ms": 30000}});
    worker.report(&resumed, invoke).await;
    let child_job = worker.next_job().await;
    worker.report(&child_job, json!({"status": "failed", "error": {"message": "nope", "code": "X", "retryable": false}})).await;
    let resumed = worker.next_job().await;
    let failed = resumed["completed_steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step_id"] == step2.as_str())
        .cloned()
        .expect("row");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["cause"], "nope");
    assert_eq!(failed["error"]["retryable"], false);
    let invoke_async = json!({"status": "yielded", "yield": {"step_id": format!("{parent}:child:2"), "type": "invoke_function_async", "function_id": "child", "input": 5}});
    worker.report(&resumed, invoke_async).await;
    let mut seen = HashMap::new();
    for _ in 0..2 {
        let j = worker.next_job().await;
        seen.insert(j["function_id"].as_str().expect("fn").to_owned(), j);
    }
    let back = &seen["parent"];
    let child_run = back["completed_steps"][2]["output"]["run_id"]
        .as_str()
        .expect("child run id");
    assert_eq!(seen["child"]["run_id"], child_run);
    assert_eq!(
        server.run_json(child_run).await["parent_run_id"],
        parent.as_str()
    );
    server.stop().await;
}

async fn concurrency_lanes_serialize_per_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register_function(json!({"id": "laned", "triggers": [{"event": "c.go"}], "concurrency": {"limit": 1, "key": "event.data.k"}})).await;
    let worker = FakeWorker::register(&server, "w-lane", &["laned"]).await;
    let a1 = server.emit_runs("c.go", json!({"k": "a"})).await.remove(0);
    let a2 = server.emit_runs("c.go", json!({"k": "a"})).await.remove(0);
    let b1 = server.emit_runs("c.go", json!({"k": "b"})).await.remove(0);
    assert_eq!(server.run_json(&a2).await["status"], "waiting_for_capacity");
    let jobs = worker.poll(10, 1).await;
    let mut runs: Vec<&str> = jobs
        .iter()
        .map(|j| j["run_id"].as_str().expect("id"))
        .collect();
    runs.sort_unstable();
    let mut expected = vec![a1.as_str(), b1.as_str()];
    expected.sort_unstable();
    assert_eq!(runs, expected, "key b is not held up by key a");
    let a1_job = jobs
        .iter()
        .find(|j| j["run_id"] == a1.as_str())
        .expect("a1");
    worker
        .report(a1_job, json!({"status": "completed", "output": 1}))
        .await;
    assert_eq!(server.run_json(&a2).await["status"], "running");
    let next = worker.next_job().await;
    assert_eq!(
        next["run_id"],
        a2.as_str(),
        "the waiting run starts when capacity frees"
    );
    server.stop().await;
}

async fn sync_triggers_return_output(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "syncy", "triggers": [{"event": "sy.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-sync", &["syncy"]).await;
    let serve_one = async {
        let job = worker.next_job().await;
        worker.ack(&job).await;
        worker.report(&job, json!({"status": "completed", "output": {"doubled": job["event"]["data"]["n"].as_i64().unwrap_or(0) * 2}})).await;
    };
    let call = server.connect_json(
        "TriggerSync",
        json!({"event": "sy.go", "data": {"n": 21}, "timeoutMs": 20000}),
    );
    let ((status, body), ()) = tokio::join!(call, serve_one);
    assert_eq!(status, 200, "{body}");
    // Proto-JSON numbers are doubles.
    assert_eq!(body["results"][0]["output"]["doubled"].as_f64(), Some(42.0));
    assert_eq!(body["results"][0]["status"], "RUN_STATUS_COMPLETED");
    let started = Instant::now();
    let (status, body) = server
        .connect_json(
            "TriggerSync",
            json!({"event": "sy.go", "data": {"n": 1}, "timeoutMs": 300}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(body["results"][0]["waitTimedOut"], true);
    assert_eq!(body["results"][0]["error"]["code"], "WAIT_TIMEOUT");
    let still = body["results"][0]["runId"]
        .as_str()
        .expect("run id")
        .to_owned();
    assert_eq!(
        server.run_json(&still).await["status"],
        "running",
        "a sync timeout leaves the run running"
    );
    server.stop().await;
}

/// Two servers on one Postgres share the queue: 200 runs complete, each dispatched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_share_one_postgres() {
    let first = TestServer::start(Backend::Postgres).await;
    let second = first.second_node().await;
    let second_base = format!("http://{}", second.local_addr);
    first
        .register_function(json!({"id": "shared", "triggers": [{"event": "sh.go"}]}))
        .await;
    let mut workers = Vec::new();
    for (i, base) in [&first.base, &second_base, &first.base, &second_base]
        .into_iter()
        .enumerate()
    {
        let w = FakeWorker::register_at(base, &first.key, &format!("w-{i}"), &["shared"]).await;
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let jobs = w.poll(8, 2).await;
                if jobs.is_empty() {
                    return done;
                }
                for job in jobs {
                    assert_eq!(w.ack(&job).await, 200);
                    let (status, _) = w
                        .report(
                            &job,
                            json!({"status": "completed", "output": job["event"]["data"]}),
                        )
                        .await;
                    assert_eq!(status, 200);
                    done += 1;
                }
            }
        }));
    }
    for i in 0..200 {
        let target = if i % 2 == 0 {
            &first.base
        } else {
            &second_base
        };
        let r = first
            .http
            .post(format!("{target}/api/v1/events"))
            .bearer_auth(&first.key)
            .json(&json!({"name": "sh.go", "data": {"i": i}}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200);
    }
    let mut total = 0;
    for w in workers {
        total += w.await.expect("worker task");
    }
    assert_eq!(total, 200, "every run handled exactly once");
    assert_eq!(
        raw_count(
            &first.url,
            "SELECT COUNT(*) FROM runs WHERE status = 'completed'"
        )
        .await,
        200
    );
    assert_eq!(
        raw_count(
            &first.url,
            "SELECT COUNT(*) FROM history WHERE kind = 'run.dispatched'"
        )
        .await,
        200,
        "no run was dispatched twice"
    );
    second.shutdown.cancel();
    second.wait().await.expect("second stops");
    first.stop().await;
}

async fn cancels_fence_running_work(backend: Backend) {
    let server = TestServer::start(backend).await;
    server.register_function(json!({"id": "cancellable", "triggers": [{"event": "x.go"}], "cancelOn": [{"event": "x.stop", "match": "data.order"}]})).await;
    let worker = FakeWorker::register(&server, "w-cancel", &["cancellable"]).await;
    let running = server
        .emit_runs("x.go", json!({"order": 1}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    worker.ack(&job).await;
    let (status, body) = server
        .connect_json("CancelRun", json!({"id": running, "reason": "operator"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "RUN_STATUS_CANCELLED");
    let (status, body) = worker
        .report(
            &job,
            json!({"status": "progress", "steps": [step_entry(&running, "a", json!(1))]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("STALE_EXECUTION")),
        "a cancelled run's worker is fenced off"
    );
    let (status, _) = server
        .connect_json("CancelRun", json!({"id": running}))
        .await;
    assert_eq!(status, 200, "cancelling again is idempotent");

    // cancelOn: a matching event cancels the sleeping run of the same order only.
    let one = server
        .emit_runs("x.go", json!({"order": 2}))
        .await
        .remove(0);
    let two = server
        .emit_runs("x.go", json!({"order": 3}))
        .await
        .remove(0);
    for _ in 0..2 {
        let job = worker.next_job().await;
        let rid = job["run_id"].as_str().expect("id").to_owned();
        let sleep = json!({"status": "yielded", "yield": {"step_id": format!("{rid}:nap:0"), "type": "sleep", "until": "2099-01-01T00:00:00.000Z"}});
        assert_eq!(worker.report(&job, sleep).await.0, 200);
    }
    server.emit_runs("x.stop", json!({"order": 2})).await;
    let cancelled = server.run_json(&one).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(
        cancelled["cancellation_cause"]
            .as_str()
            .unwrap_or_default()
            .contains("x.stop")
    );
    assert_eq!(server.run_json(&two).await["status"], "waiting");
    let (status, body) = server.connect_json("CancelRun", json!({"id": one})).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

async fn run_timeouts_fail_the_run(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(
            json!({"id": "slowpoke", "triggers": [{"event": "t.go"}], "timeoutMs": 300}),
        )
        .await;
    let worker = FakeWorker::register(&server, "w-timeout", &["slowpoke"]).await;
    let run_id = server.emit_runs("t.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    worker.ack(&job).await;
    let ended = common::eventually("the run times out", Duration::from_secs(10), || async {
        let r = server.run_json(&run_id).await;
        (r["status"] == "failed").then_some(r)
    })
    .await;
    assert_eq!(ended["error"]["code"], "RUN_TIMEOUT");
    let (status, _) = worker
        .report(&job, json!({"status": "completed", "output": "too late"}))
        .await;
    assert_eq!(status, 409);
    server.stop().await;
}

both_backends! {
    cancels => cancels_fence_running_work;
    run_timeouts => run_timeouts_fail_the_run;
    fencing => fenced_results;
    lease_expiry => expired_leases_move_to_another_worker;
    heartbeats => heartbeats_keep_leases;
    retries => retries_back_off_then_fail;
    sleeps => sleeps_park_and_resume;
    waits => waits_match_and_time_out;
    invokes => invokes_resume_the_parent;
    lanes => concurrency_lanes_serialize_per_key;
    sync_triggers => sync_triggers_return_output;
}
