//! Time travel against the truth, on both backends: random runs are driven through the real
//! pull protocol and run control (checkpoints, failed and retried attempts, sleeps, pauses at
//! once and at a step boundary, injections, resumes, patches); after every committed change the
//! run and its steps are read back from the REST API with the instant. Afterwards
//! `GetRunStateAt` at each recorded instant must give exactly the state the run had then.

mod common;

use common::{Backend, FakeWorker, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// What the REST API showed at an instant: the run's status and its steps (id, status, output).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    status: String,
    steps: Vec<(String, String, Value)>,
}

async fn observe(server: &TestServer, run: &str) -> Observed {
    let r = server.run_json(run).await;
    let steps: Value = server.get_json(&format!("/api/v1/runs/{run}/steps")).await;
    Observed {
        status: r["status"].as_str().unwrap_or_default().to_owned(),
        steps: steps["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                (
                    s["step_id"].as_str().unwrap_or_default().to_owned(),
                    s["status"].as_str().unwrap_or_default().to_owned(),
                    s["output"].clone(),
                )
            })
            .collect(),
    }
}

async fn state_at(server: &TestServer, run: &str, at: &str) -> Observed {
    let (status, body) = server
        .service_json(
            "TimeTravelService",
            "GetRunStateAt",
            json!({"run_id": run, "timestamp": at}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let snapshot = &body["snapshot"];
    let bytes = |v: &Value| -> Value {
        use base64::Engine as _;
        let raw = v.as_str().unwrap_or_default();
        if raw.is_empty() {
            return Value::Null;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .expect("base64 payload");
        serde_json::from_slice(&decoded).expect("JSON payload")
    };
    Observed {
        status: snapshot["status"].as_str().unwrap_or_default().to_owned(),
        steps: snapshot["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["stepId"].as_str().unwrap_or_default().to_owned(),
                    s["status"].as_str().unwrap_or_default().to_owned(),
                    bytes(&s["output"]),
                )
            })
            .collect(),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn step(run: &str, name: &str, output: &Value, completed: bool) -> Value {
    let mut s = json!({
        "id": format!("{run}:{name}:0"), "name": name, "type": "invoke",
        "status": if completed { "completed" } else { "failed" },
        "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:00.001Z",
        "duration_ms": 1,
    });
    if completed {
        s["output"] = output.clone();
    } else {
        s["error"] = json!({"message": "step broke", "retryable": true});
    }
    s
}

/// One random run, observed after each change; returns (instant, what was observed).
async fn drive(
    server: &TestServer,
    worker: &FakeWorker,
    rng: &mut StdRng,
    tag: usize,
) -> (String, Vec<(String, Observed)>) {
    let run = server
        .emit_runs("tt.go", json!({"tag": tag}))
        .await
        .remove(0);
    let mut seen = vec![(now(), observe(server, &run).await)];
    let mut named = 0usize;
    for _round in 0..12 {
        let job = worker.next_job().await;
        assert_eq!(worker.ack(&job).await, 200);
        let mut offset = job["step_sequence_base"].as_i64().unwrap_or(0);
        let mut ended_dispatch = false;
        // Checkpoints of this dispatch.
        for _ in 0..rng.random_range(0..3) {
            named += 1;
            let name = format!("s{named}");
            let completed = rng.random_bool(0.85);
            let body = json!({"status": "progress", "steps": [step(&run, &name, &json!(named * 10), completed)], "step_offset": offset});
            if rng.random_bool(0.2) {
                // A pause request before the checkpoint: the checkpoint is its boundary.
                let (s, b) = server
                    .connect_json("PauseRun", json!({"run_id": run}))
                    .await;
                assert_eq!((s, b["status"].as_str()), (200, Some("pause_requested")));
                let (status, _) = worker.report(&job, body).await;
                assert_eq!(status, 409, "the paused dispatch is fenced off");
                seen.push((now(), observe(server, &run).await));
                assert_eq!(seen.last().expect("present").1.status, "paused");
                edit_and_resume(server, &run, rng, &mut seen).await;
                ended_dispatch = true;
                break;
            }
            let (status, _) = worker.report(&job, body).await;
            assert_eq!(status, 200);
            offset += 1;
            seen.push((now(), observe(server, &run).await));
        }
        if ended_dispatch {
            continue;
        }
        let roll = rng.random_range(0..10);
        let outcome = match roll {
            0..=2 => json!({"status": "completed", "output": {"tag": tag, "steps": named}}),
            3..=5 => {
                json!({"status": "failed", "error": {"message": "transient", "retryable": true}})
            }
            6..=7 => {
                named += 1;
                let until = (chrono::Utc::now() + chrono::Duration::milliseconds(30))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                json!({"status": "yielded", "yield": {"step_id": format!("{run}:nap{named}:0"), "type": "sleep", "until": until}})
            }
            _ => json!({"status": "failed", "error": {"message": "fatal", "retryable": false}}),
        };
        let mut outcome = outcome;
        outcome["step_offset"] = json!(offset);
        let (status, _) = worker.report(&job, outcome).await;
        assert_eq!(status, 200);
        let observed = observe(server, &run).await;
        let status = observed.status.clone();
        seen.push((now(), observed));
        match status.as_str() {
            "completed" => break,
            "failed" => {
                // Patch the failed attempt's last step (when it has one) and resume it.
                patch_any(server, &run, &mut seen).await;
                let (s, b) = server
                    .connect_json("ResumeRun", json!({"run_id": run}))
                    .await;
                assert_eq!(s, 200, "{b}");
                seen.push((now(), observe(server, &run).await));
            }
            "paused" => edit_and_resume(server, &run, rng, &mut seen).await,
            _ if rng.random_bool(0.3) => {
                // A run between dispatches pauses at once.
                let (s, b) = server
                    .connect_json("PauseRun", json!({"run_id": run}))
                    .await;
                assert_eq!((s, b["status"].as_str()), (200, Some("paused")), "{b}");
                seen.push((now(), observe(server, &run).await));
                edit_and_resume(server, &run, rng, &mut seen).await;
            }
            _ => {}
        }
    }
    if server.run_json(&run).await["status"] != "completed" {
        let (s, _) = server.connect_json("CancelRun", json!({"id": run})).await;
        assert_eq!(s, 200);
        seen.push((now(), observe(server, &run).await));
    }
    (run, seen)
}

async fn patch_any(server: &TestServer, run: &str, seen: &mut Vec<(String, Observed)>) {
    let last = seen.last().expect("present").1.steps.last().cloned();
    if let Some((step_id, _, _)) = last {
        let (s, b) = server
            .connect_json(
                "PatchStep",
                json!({"step_id": format!("{run}:{step_id}"), "output_value": {"patched": true}, "reason": "fix"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        seen.push((now(), observe(server, run).await));
    }
}

async fn edit_and_resume(
    server: &TestServer,
    run: &str,
    rng: &mut StdRng,
    seen: &mut Vec<(String, Observed)>,
) {
    let completed: Vec<String> = seen
        .last()
        .expect("present")
        .1
        .steps
        .iter()
        .filter(|s| s.1 == "completed" || s.1 == "failed")
        .map(|s| s.0.clone())
        .collect();
    if let Some(step_id) = completed.last().filter(|_| rng.random_bool(0.7)) {
        let (s, b) = server
            .connect_json(
                "InjectStepOutput",
                json!({"run_id": run, "step_id": step_id, "new_output": base64_json(&json!({"injected": 1})), "reason": "test"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        seen.push((now(), observe(server, run).await));
    }
    let (s, b) = server
        .connect_json("ResumeRun", json!({"run_id": run}))
        .await;
    assert_eq!(s, 200, "{b}");
    seen.push((now(), observe(server, run).await));
}

fn base64_json(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

async fn state_at_matches_what_the_run_had(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({
            "id": "tt", "triggers": [{"event": "tt.go"}],
            "retry": {"maxAttempts": 3, "initialDelayMs": 10, "backoffFactor": 1.0, "maxDelayMs": 10, "onExhausted": "pause"},
        }))
        .await;
    let worker = FakeWorker::register(&server, "w-tt", &["tt"]).await;
    let mut checked = 0;
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (run, seen) = drive(&server, &worker, &mut rng, seed as usize).await;
        for (at, observed) in &seen {
            let folded = state_at(&server, &run, at).await;
            assert_eq!(
                &folded, observed,
                "seed {seed}: GetRunStateAt({at}) differs from what the run had then"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} instants checked");
    server.stop().await;
}

/// `ResumeRun{from_step}` on a failed run: the step named and the ones after it run again, the
/// earlier ones stay memoized; the reset is in the history and the state before it is intact.
async fn resume_from_a_step(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .register_function(json!({"id": "rs", "triggers": [{"event": "rs.go"}]}))
        .await;
    let worker = FakeWorker::register(&server, "w-rs", &["rs"]).await;
    let run = server.emit_runs("rs.go", json!({})).await.remove(0);
    let job = worker.next_job().await;
    assert_eq!(worker.ack(&job).await, 200);
    let steps = json!([
        step(&run, "a", &json!(1), true),
        step(&run, "b", &json!(2), true)
    ]);
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "failed", "steps": steps,
                             "error": {"message": "c broke", "retryable": false}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.run_json(&run).await["status"], "failed");
    let before_reset = now();

    let (status, body) = server
        .connect_json("ResumeRun", json!({"run_id": run, "from_step": "b"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resumeFromStep"], format!("{run}:b:0"), "{body}");
    let again = worker.next_job().await;
    let memo: Vec<&str> = again["completed_steps"]
        .as_array()
        .expect("completed_steps")
        .iter()
        .filter_map(|s| s["step_id"].as_str())
        .collect();
    assert_eq!(
        memo,
        [format!("{run}:a:0")],
        "only the steps before b stay memoized"
    );
    assert_eq!(again["step_sequence_base"], 1);
    assert_eq!(worker.ack(&again).await, 200);
    let (status, _) = worker
        .report(
            &again,
            json!({"status": "completed", "output": {"ok": true}, "step_offset": 1,
                               "steps": [step(&run, "b", &json!(20), true)]}),
        )
        .await;
    assert_eq!(status, 200);
    let done = server.run_json(&run).await;
    assert_eq!(done["status"], "completed", "{done}");
    let kinds: Vec<String> = server
        .get_json(&format!("/api/v1/runs/{run}/history"))
        .await["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(kinds.contains(&"steps.reset".to_owned()), "{kinds:?}");
    let then = state_at(&server, &run, &before_reset).await;
    assert_eq!(
        then.steps.iter().map(|s| s.2.clone()).collect::<Vec<_>>(),
        [json!(1), json!(2)],
        "the state before the reset keeps b's first output"
    );
    let latest = state_at(&server, &run, &now()).await;
    assert_eq!(
        latest.steps.iter().map(|s| s.2.clone()).collect::<Vec<_>>(),
        [json!(1), json!(20)]
    );
    server.stop().await;
}

both_backends! {
    state_at_equals_the_runs_real_state => state_at_matches_what_the_run_had;
    resume_from_step_reruns_from_there => resume_from_a_step;
}
