//! The client commands: each asks the server, then prints a table (or, with `--json`, the
//! server's JSON for scripts).

use serde_json::{Value, json};

use super::table::{Table, short_json};
use super::{Client, ClientError, encode_payload};
use crate::cli::{EventsCommand, FunctionsCommand, RunsCommand};

/// What a command prints: a text for people, JSON for scripts.
pub struct Output {
    pub text: String,
    pub json: Value,
}

impl Output {
    fn new(text: String, json: Value) -> Self {
        Self { text, json }
    }
}

fn parse_json(text: &str, what: &str) -> Result<Value, ClientError> {
    serde_json::from_str(text)
        .map_err(|e| ClientError::Invalid(format!("{what} is not valid JSON ({e}): {text}")))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A step named by its id, its row id (`<run>:<step id>`) or its name (first occurrence).
pub async fn resolve_step(client: &Client, run: &str, step: &str) -> Result<String, ClientError> {
    let steps = client.steps(run).await?;
    let row_prefix = format!("{run}:{run}:");
    let wanted = step
        .strip_prefix(&format!("{run}:"))
        .filter(|_| step.starts_with(&row_prefix))
        .unwrap_or(step);
    steps
        .iter()
        .find(|s| s["step_id"] == wanted)
        .or_else(|| steps.iter().find(|s| s["name"] == wanted))
        .and_then(|s| s["step_id"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            let known: Vec<String> = steps.iter().map(|step| s(&step["name"])).collect();
            ClientError::Invalid(format!(
                "run {run} has no step '{step}' (its steps: {})",
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
}

pub fn run_text(run: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "function_id",
        "status",
        "attempt",
        "event_name",
        "created_at",
        "started_at",
        "ended_at",
        "pause_reason",
        "cancellation_cause",
    ] {
        if !run[key].is_null() && run[key] != "" {
            out.push_str(&format!("{key:<18} {}\n", s(&run[key])));
        }
    }
    for key in ["input", "output", "error"] {
        if !run[key].is_null() {
            out.push_str(&format!("{key}:\n{}\n", pretty(&run[key])));
        }
    }
    out
}

pub fn steps_text(steps: &[Value]) -> String {
    let mut t = Table::new(&["#", "NAME", "TYPE", "STATUS", "EDITED", "OUTPUT / ERROR"]);
    for step in steps {
        let edited = if step["injected"] == true {
            "injected"
        } else if !step["patched_at"].is_null() {
            "patched"
        } else {
            ""
        };
        let payload = if step["error"].is_null() {
            short_json(&step["output"], 60)
        } else {
            short_json(&step["error"], 60)
        };
        t.row(vec![
            s(&step["sequence"]),
            s(&step["name"]),
            s(&step["type"]),
            s(&step["status"]),
            edited.into(),
            payload,
        ]);
    }
    if t.is_empty() {
        "no steps yet\n".into()
    } else {
        t.render()
    }
}

fn timeline_text(events: &[Value]) -> String {
    let mut t = Table::new(&["SEQ", "TIME", "", "KIND", "SUMMARY"]);
    for e in events {
        t.row(vec![
            s(&e["id"]),
            s(&e["timestamp"]),
            if e["significant"] == true { "!" } else { "" }.into(),
            s(&e["eventType"]),
            s(&e["summary"]),
        ]);
    }
    t.render()
}

fn state_text(state: &Value) -> String {
    let mut out = format!(
        "run {} at {}: {}\n",
        s(&state["runId"]),
        s(&state["timestamp"]),
        s(&state["status"])
    );
    let steps: Vec<Value> = state["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|st| {
            json!({
                "sequence": st["sequence"], "name": st["name"], "type": st["type"],
                "status": st["status"], "output": st["output"], "error": st["error"],
                "injected": st["injected"], "patched_at": if st["patched"] == true { json!("yes") } else { Value::Null },
            })
        })
        .collect();
    out.push_str(&steps_text(&steps));
    out
}

pub async fn runs(client: &Client, command: &RunsCommand) -> Result<Output, ClientError> {
    match command {
        RunsCommand::List {
            function,
            status,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(f) = function {
                query.push(("function_id", f.clone()));
            }
            if let Some(st) = status {
                query.push(("status", st.clone()));
            }
            let body = client.get("/api/v1/runs", &query).await?;
            let mut t = Table::new(&["ID", "FUNCTION", "STATUS", "ATTEMPT", "CREATED"]);
            for r in body["runs"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                t.row(vec![
                    s(&r["id"]),
                    s(&r["function_id"]),
                    s(&r["status"]),
                    s(&r["attempt"]),
                    s(&r["created_at"]),
                ]);
            }
            let text = if t.is_empty() {
                "no runs\n".into()
            } else {
                t.render()
            };
            Ok(Output::new(text, body))
        }
        RunsCommand::Get { run } => {
            let body = client.run(run).await?;
            Ok(Output::new(run_text(&body), body))
        }
        RunsCommand::Steps { run } => {
            let steps = client.steps(run).await?;
            Ok(Output::new(steps_text(&steps), json!({"steps": steps})))
        }
        RunsCommand::Cancel { run, reason } => {
            let body = client
                .post(
                    &format!("/api/v1/runs/{run}/cancel"),
                    &json!({"reason": reason}),
                )
                .await?;
            Ok(Output::new(format!("run {run} cancelled\n"), body))
        }
        RunsCommand::Pause { run } => {
            let body = client
                .call("IronflowService", "PauseRun", &json!({"run_id": run}))
                .await?;
            let status = s(&body["status"]);
            let text = if status == "paused" {
                format!("run {run} is paused\n")
            } else {
                format!("run {run} pauses at its next step boundary ({status})\n")
            };
            Ok(Output::new(text, body))
        }
        RunsCommand::Resume { run, from_step } => {
            let mut req = json!({"run_id": run});
            if let Some(step) = from_step {
                req["from_step"] = json!(resolve_step(client, run, step).await?);
            }
            let body = client.call("IronflowService", "ResumeRun", &req).await?;
            Ok(Output::new(format!("run {run} resumed\n"), body))
        }
        RunsCommand::Inject {
            run,
            step,
            output,
            reason,
        } => {
            let value = parse_json(output, "the output")?;
            let step_id = resolve_step(client, run, step).await?;
            let body = client
                .call(
                    "IronflowService",
                    "InjectStepOutput",
                    &json!({"run_id": run, "step_id": step_id, "new_output": encode_payload(&value), "reason": reason}),
                )
                .await?;
            Ok(Output::new(
                format!("step {step_id} of run {run}: output injected\n"),
                body,
            ))
        }
        RunsCommand::Patch {
            run,
            step,
            output,
            reason,
        } => {
            let value = parse_json(output, "the output")?;
            let step_id = resolve_step(client, run, step).await?;
            let body = client
                .call(
                    "IronflowService",
                    "PatchStep",
                    &json!({"step_id": format!("{run}:{step_id}"), "output_value": value, "reason": reason}),
                )
                .await?;
            Ok(Output::new(
                format!("step {step_id} of run {run}: output patched\n"),
                body,
            ))
        }
    }
}

pub async fn events(client: &Client, command: &EventsCommand) -> Result<Output, ClientError> {
    match command {
        EventsCommand::Emit {
            name,
            data,
            idempotency_key,
        } => {
            let mut req = json!({"name": name, "data": parse_json(data, "--data")?});
            if let Some(key) = idempotency_key {
                req["idempotency_key"] = json!(key);
            }
            let body = client.post("/api/v1/events", &req).await?;
            let runs: Vec<String> = body["run_ids"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(s)
                .collect();
            let text = format!(
                "event {} stored; runs started: {}\n",
                s(&body["event_id"]),
                if runs.is_empty() {
                    "none".into()
                } else {
                    runs.join(", ")
                }
            );
            Ok(Output::new(text, body))
        }
        EventsCommand::List { name, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(n) = name {
                query.push(("name", n.clone()));
            }
            let body = client.get("/api/v1/events", &query).await?;
            let mut t = Table::new(&["ID", "NAME", "RECEIVED", "DATA"]);
            for e in body["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                t.row(vec![
                    s(&e["id"]),
                    s(&e["name"]),
                    s(&e["timestamp"]),
                    short_json(&e["data"], 60),
                ]);
            }
            let text = if t.is_empty() {
                "no events\n".into()
            } else {
                t.render()
            };
            Ok(Output::new(text, body))
        }
        EventsCommand::Get { id } => {
            let body = client.get(&format!("/api/v1/events/{id}"), &[]).await?;
            let text = format!(
                "id       {}\nname     {}\nreceived {}\nruns     {}\ndata:\n{}\n",
                s(&body["id"]),
                s(&body["name"]),
                s(&body["timestamp"]),
                s(&body["run_ids"]),
                pretty(&body["data"])
            );
            Ok(Output::new(text, body))
        }
    }
}

pub async fn functions(client: &Client, command: &FunctionsCommand) -> Result<Output, ClientError> {
    match command {
        FunctionsCommand::List => {
            let body = client.get("/api/v1/functions", &[]).await?;
            let mut t = Table::new(&["ID", "STATUS", "VERSION", "TRIGGERS"]);
            for f in body["functions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let triggers: Vec<String> = f["triggers"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| s(&t["event"]))
                    .collect();
                t.row(vec![
                    s(&f["id"]),
                    s(&f["status"]),
                    s(&f["version"]),
                    triggers.join(", "),
                ]);
            }
            let text = if t.is_empty() {
                "no functions\n".into()
            } else {
                t.render()
            };
            Ok(Output::new(text, body))
        }
        FunctionsCommand::Get { id } => {
            let body = client.get(&format!("/api/v1/functions/{id}"), &[]).await?;
            Ok(Output::new(format!("{}\n", pretty(&body)), body))
        }
        FunctionsCommand::History { id } => {
            let body = client
                .call(
                    "IronflowService",
                    "ListFunctionHistory",
                    &json!({"function_id": id, "limit": 200}),
                )
                .await?;
            let mut t = Table::new(&[
                "CHANGE", "TYPE", "VERSION", "STATUS", "ACTOR", "REASON", "TIME",
            ]);
            for e in body["entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                t.row(vec![
                    s(&e["entityVersion"]),
                    s(&e["changeType"]),
                    s(&e["functionSnapshot"]["version"]),
                    s(&e["functionSnapshot"]["status"]),
                    s(&e["actorId"]),
                    s(&e["changeReason"]),
                    s(&e["recordedAt"]),
                ]);
            }
            Ok(Output::new(t.render(), body))
        }
        FunctionsCommand::Rollback {
            id,
            version,
            reason,
        } => {
            let body = client
                .call(
                    "IronflowService",
                    "RollbackFunction",
                    &json!({"function_id": id, "version": version, "change_reason": reason}),
                )
                .await?;
            let text = format!(
                "function {id} rolled back to the definition of version {version}; it is now version {}\n",
                s(&body["function"]["version"])
            );
            Ok(Output::new(text, body))
        }
    }
}

/// `ironflow history <run> [--at T]`: the run's timeline, or its state at an instant.
pub async fn history(client: &Client, run: &str, at: Option<&str>) -> Result<Output, ClientError> {
    match at {
        Some(at) => {
            let state = client.state_at(run, Some(at)).await?;
            Ok(Output::new(state_text(&state), state))
        }
        None => {
            let events = client.timeline(run).await?;
            Ok(Output::new(
                timeline_text(&events),
                json!({"events": events}),
            ))
        }
    }
}

/// `ironflow sql "…"`: the rows of a history query as a table (NULL shown as empty).
pub async fn sql(
    client: &Client,
    query: &str,
    timeout_ms: i64,
    max_rows: i64,
) -> Result<Output, ClientError> {
    let body = client
        .call(
            "QueryService",
            "ExecuteSQL",
            &json!({"query": query, "timeoutMs": timeout_ms, "maxRows": max_rows}),
        )
        .await?;
    let columns: Vec<String> = body["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    let rows = body["rows"].as_array().cloned().unwrap_or_default();
    for row in &rows {
        let values = row["values"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        table.row(values);
    }
    let text = format!("{}({} rows)", table.render(), rows.len());
    Ok(Output::new(text, body))
}
