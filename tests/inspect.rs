//! The client side of the binary against a real server, on both backends: the `runs` /
//! `history` / `functions` commands (tables, `--json`, clear errors), `ironflow inspect` in a
//! real terminal (tmux: send-keys, capture-pane; a scripted `$EDITOR` patches a step), and
//! `ironflow inspect --dap` driven by a client speaking the Debug Adapter Protocol on stdio.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, FakeWorker, TestServer, step_entry};
use serde_json::{Value, json};

fn ironflow(server: &TestServer) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ironflow"));
    c.env("IRONFLOW_SERVER_URL", &server.base)
        .env("IRONFLOW_API_KEY", &server.key);
    c
}

/// A run with two completed steps and a third that failed for good, and the worker that ran it.
async fn failed_run(server: &TestServer) -> (String, FakeWorker) {
    server
        .register_function(json!({"id": "shop", "triggers": [{"event": "shop.order"}]}))
        .await;
    let worker = FakeWorker::register(server, "w-inspect", &["shop"]).await;
    let run = server
        .emit_runs("shop.order", json!({"order": 7}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    assert_eq!(worker.ack(&job).await, 200);
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "progress", "steps": [step_entry(&run, "reserve", json!({"sku": "A1"}))]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "progress", "step_offset": 1, "steps": [step_entry(&run, "charge", json!({"paid": 12}))]}),
        )
        .await;
    assert_eq!(status, 200);
    let failed_step = json!({
        "id": format!("{run}:ship:0"), "name": "ship", "type": "invoke", "status": "failed",
        "error": {"message": "carrier down", "retryable": false},
        "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:00.002Z",
    });
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "failed", "step_offset": 2, "steps": [failed_step],
                   "error": {"message": "carrier down", "retryable": false}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.run_json(&run).await["status"], "failed");
    (run, worker)
}

fn output(c: &mut Command) -> (bool, String, String) {
    let out = c.output().expect("ironflow runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn client_commands(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (run, _worker) = failed_run(&server).await;

    let (ok, out, err) = output(ironflow(&server).args(["runs", "steps", &run]));
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("#") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert!(
        lines[1].contains("reserve") && lines[1].contains("completed"),
        "{out}"
    );
    assert!(
        lines[3].contains("ship") && lines[3].contains("carrier down"),
        "{out}"
    );

    let (ok, out, _) = output(ironflow(&server).args(["runs", "list", "--json"]));
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(listed["runs"][0]["id"], run.as_str());

    let (ok, out, _) = output(ironflow(&server).args(["history", &run]));
    assert!(ok);
    assert!(
        out.contains("run.created") && out.contains("step ship failed"),
        "{out}"
    );

    // Fix the failed step from the command line, then resume: the run starts again.
    let (ok, out, err) = output(ironflow(&server).args([
        "runs",
        "patch",
        &run,
        "ship",
        r#"{"tracking":"T1"}"#,
        "--reason",
        "shipped by hand",
    ]));
    assert!(ok, "{err}");
    assert!(out.contains("patched"), "{out}");
    let (ok, _, err) = output(ironflow(&server).args(["runs", "resume", &run]));
    assert!(ok, "{err}");
    assert_eq!(server.run_json(&run).await["status"], "running");

    let (ok, out, _) = output(ironflow(&server).args(["functions", "history", "shop"]));
    assert!(ok);
    assert!(out.contains("update"), "{out}");
    let (ok, out, _) = output(ironflow(&server).args(["functions", "list"]));
    assert!(
        ok && out.contains("shop") && out.contains("shop.order"),
        "{out}"
    );

    let (ok, out, err) = output(ironflow(&server).args([
        "events",
        "emit",
        "shop.order",
        "--data",
        r#"{"order": 8}"#,
        "--json",
    ]));
    assert!(ok, "{err}");
    let emitted: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        emitted["run_ids"].as_array().map(Vec::len),
        Some(1),
        "{emitted}"
    );
    let event_id = emitted["event_id"]
        .as_str()
        .expect("an event id")
        .to_owned();
    let (ok, out, _) = output(ironflow(&server).args(["events", "get", &event_id]));
    assert!(ok && out.contains("\"order\": 8"), "{out}");
    let (ok, out, _) = output(ironflow(&server).args(["events", "list", "--name", "shop.order"]));
    assert!(
        ok && out.lines().count() == 3,
        "a header and two events: {out}"
    );

    // Clear errors: a wrong key, an unreachable server, a missing run, bad JSON.
    let (ok, _, err) = output(
        ironflow(&server)
            .env("IRONFLOW_API_KEY", "ifkey_wrong")
            .args(["runs", "list"]),
    );
    assert!(
        !ok && err.contains("refused the API key"),
        "wrong key: {err}"
    );
    let (ok, _, err) = output(
        ironflow(&server)
            .env("IRONFLOW_SERVER_URL", "http://127.0.0.1:9")
            .args(["runs", "list"]),
    );
    assert!(!ok && err.contains("cannot reach the server"), "{err}");
    let (ok, _, err) = output(ironflow(&server).args(["runs", "get", "no-such-run"]));
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, _, err) = output(ironflow(&server).args(["runs", "patch", &run, "ship", "{oops"]));
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    server.stop().await;
}

/// A tmux session running one command; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(command: &str, env: &[(&str, &str)]) -> Self {
        let name = format!("ifinspect-{}", uuid::Uuid::new_v4().simple());
        let mut c = Command::new("tmux");
        c.args(["new-session", "-d", "-s", &name, "-x", "200", "-y", "50"]);
        for (k, v) in env {
            c.args(["-e", &format!("{k}={v}")]);
        }
        let status = c.arg(command).status().expect("tmux is installed");
        assert!(status.success(), "tmux new-session failed");
        Self { name }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    /// Waits until the screen satisfies `check` (fails with the screen otherwise).
    fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on the screen within 15 s:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.name])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// The state pane's line that shows a step: the right column (the timeline takes the left
/// 45% of the 200-column terminal).
fn state_line(screen: &str, step: &str) -> Option<String> {
    screen
        .lines()
        .map(|l| l.chars().skip(90).collect::<String>())
        .find(|l| {
            l.contains(&format!(" {step} ")) && (l.contains("completed") || l.contains("failed"))
        })
}

async fn inspect_in_a_terminal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (run, worker) = failed_run(&server).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nprintf '{\"tracking\": \"T9\"}\\n' > \"$1\"\n",
    )
    .expect("editor script");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let command = format!("{} inspect {run}", env!("CARGO_BIN_EXE_ironflow"));
    let tmux = Tmux::start(
        &command,
        &[
            ("IRONFLOW_SERVER_URL", &server.base),
            ("IRONFLOW_API_KEY", &server.key),
            ("EDITOR", editor.to_str().expect("present")),
            ("TERM", "xterm-256color"),
        ],
    );
    // The cursor starts at the newest entry: all three steps, the failed one among them.
    let screen = tmux.until("the timeline and the final state", |s| {
        s.contains("Timeline") && state_line(s, "ship").is_some_and(|l| l.contains("failed"))
    });
    assert!(screen.contains("step reserve completed"), "{screen}");
    assert!(screen.contains("run failed: carrier down"), "{screen}");

    // To the first entry: the run had no steps then.
    tmux.keys(&["g"]);
    tmux.until("the state at the first entry", |s| {
        s.contains("no steps yet") && s.contains("entry 1/")
    });
    // Step by step: the first step appears, the second not yet.
    tmux.keys(&["j", "j"]);
    let screen = tmux.until("the state after the first step", |s| {
        state_line(s, "reserve").is_some()
    });
    assert!(state_line(&screen, "charge").is_none(), "{screen}");
    // The next failure: the failed step.
    tmux.keys(&["n"]);
    tmux.until("the failure", |s| {
        state_line(s, "ship").is_some_and(|l| l.contains("failed"))
    });

    // Select the failed step (third) and edit its output in $EDITOR: a patch.
    tmux.keys(&["G", "Right", "Right"]);
    tmux.until("the ship step selected", |s| s.contains("Step ship"));
    tmux.keys(&["e"]);
    tmux.until("the patch confirmed", |s| s.contains("output patched"));
    let steps: Value = server.get_json(&format!("/api/v1/runs/{run}/steps")).await;
    let ship = &steps["steps"][2];
    assert_eq!(ship["output"], json!({"tracking": "T9"}), "{steps}");
    assert_eq!(ship["status"], "completed");
    assert!(ship["patched_at"].is_string(), "{ship}");
    tmux.until("the patched step in the state", |s| {
        state_line(s, "ship").is_some_and(|l| l.contains("(patched)"))
    });

    // Follow it live: resume from the debugger, then the worker finishes the run.
    tmux.keys(&["f", "r"]);
    tmux.until("the resume on the timeline", |s| {
        s.contains("following") && s.contains("resumed (ResumeRun)")
    });
    let job = worker.next_job().await;
    assert_eq!(worker.ack(&job).await, 200);
    let (status, _) = worker
        .report(
            &job,
            json!({"status": "completed", "output": {"shipped": true}, "step_offset": 3}),
        )
        .await;
    assert_eq!(status, 200);
    tmux.until("the run's end, live", |s| {
        s.contains("run completed") && s.contains("now completed")
    });

    tmux.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!tmux.alive(), "q quits");

    // --replay plays the history forward from the first entry.
    let replay = Tmux::start(
        &format!(
            "{} inspect {run} --replay --speed 20",
            env!("CARGO_BIN_EXE_ironflow")
        ),
        &[
            ("IRONFLOW_SERVER_URL", &server.base),
            ("IRONFLOW_API_KEY", &server.key),
            ("TERM", "xterm-256color"),
        ],
    );
    replay.until("the replay's end", |s| {
        s.contains("replay finished") && state_line(s, "ship").is_some()
    });
    server.stop().await;
}

/// A DAP client on the child's stdio.
struct Dap {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    seq: i64,
}

impl Dap {
    fn send(&mut self, command: &str, arguments: Value) -> i64 {
        self.seq += 1;
        let body =
            json!({"seq": self.seq, "type": "request", "command": command, "arguments": arguments})
                .to_string();
        let stdin = self.child.stdin.as_mut().expect("stdin");
        write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        stdin.flush().expect("flush");
        self.seq
    }

    fn read(&mut self) -> Value {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            assert!(
                self.out.read_line(&mut line).expect("read") > 0,
                "adapter closed stdout"
            );
            let line = line.trim_end();
            if line.is_empty() && length > 0 {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut self.out, &mut body).expect("body");
        serde_json::from_slice(&body).expect("JSON message")
    }

    /// Sends a request and returns its response (events before it are collected).
    fn request(&mut self, command: &str, arguments: Value) -> (Value, Vec<Value>) {
        let seq = self.send(command, arguments);
        let mut events = Vec::new();
        loop {
            let m = self.read();
            if m["type"] == "response" && m["request_seq"] == seq {
                return (m, events);
            }
            events.push(m);
        }
    }

    fn event(&mut self, name: &str) -> Value {
        loop {
            let m = self.read();
            if m["type"] == "event" && m["event"] == name {
                return m;
            }
        }
    }
}

async fn inspect_over_dap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (run, _worker) = failed_run(&server).await;
    let mut child = ironflow(&server)
        .args(["inspect", "--dap", &run])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("adapter starts");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut dap = Dap { child, out, seq: 0 };

    let (init, _) = dap.request("initialize", json!({"adapterID": "ironflow"}));
    assert_eq!(init["success"], true, "{init}");
    assert_eq!(init["body"]["supportsStepBack"], true);
    dap.event("initialized");
    let created = server.run_json(&run).await["created_at"].clone();
    let (launch, _) = dap.request("launch", json!({"at": created}));
    assert_eq!(launch["success"], true, "{launch}");
    let stopped = dap.event("stopped");
    assert_eq!(stopped["body"]["reason"], "entry");
    dap.request("configurationDone", json!({}));

    let (threads, _) = dap.request("threads", json!({}));
    assert_eq!(threads["body"]["threads"][0]["name"], format!("run {run}"));
    let (trace, _) = dap.request("stackTrace", json!({"threadId": 1}));
    assert_eq!(
        trace["body"]["totalFrames"], 0,
        "no step at creation: {trace}"
    );

    // Step over until the first step is a frame.
    let mut frames = Vec::new();
    for _ in 0..10 {
        let (next, _) = dap.request("next", json!({"threadId": 1}));
        assert_eq!(next["success"], true);
        dap.event("stopped");
        let (trace, _) = dap.request("stackTrace", json!({"threadId": 1}));
        frames = trace["body"]["stackFrames"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !frames.is_empty() {
            break;
        }
    }
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0]["name"]
            .as_str()
            .expect("present")
            .starts_with("reserve"),
        "{frames:?}"
    );
    let (scopes, _) = dap.request("scopes", json!({"frameId": 0}));
    let step_ref = scopes["body"]["scopes"][0]["variablesReference"].clone();
    let (vars, _) = dap.request("variables", json!({"variablesReference": step_ref}));
    let vars = vars["body"]["variables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let output = vars
        .iter()
        .find(|v| v["name"] == "output")
        .expect("an output variable");
    assert!(
        output["value"].as_str().expect("present").contains("A1"),
        "{vars:?}"
    );
    let (nested, _) = dap.request(
        "variables",
        json!({"variablesReference": output["variablesReference"]}),
    );
    assert_eq!(nested["body"]["variables"][0]["name"], "sku", "{nested}");
    let run_ref = scopes["body"]["scopes"][1]["variablesReference"].clone();
    let (run_vars, _) = dap.request("variables", json!({"variablesReference": run_ref}));
    assert!(
        run_vars.to_string().contains("order"),
        "the event's data as the run's input: {run_vars}"
    );

    // Continue to the end: three frames, the newest (failed) on top.
    dap.request("continue", json!({"threadId": 1}));
    dap.event("stopped");
    let (trace, _) = dap.request("stackTrace", json!({"threadId": 1}));
    let names: Vec<String> = trace["body"]["stackFrames"]
        .as_array()
        .expect("present")
        .iter()
        .map(|f| f["name"].as_str().expect("present").to_owned())
        .collect();
    assert_eq!(
        names,
        ["ship [failed]", "charge [completed]", "reserve [completed]"]
    );

    let (bye, _) = dap.request("disconnect", json!({}));
    assert_eq!(bye["success"], true);
    let status = dap.child.wait().expect("adapter exits");
    assert!(status.success());
    server.stop().await;
}

both_backends! {
    client_commands_against_a_server => client_commands;
    inspect_tui_in_tmux => inspect_in_a_terminal;
    inspect_dap_over_stdio => inspect_over_dap;
}
