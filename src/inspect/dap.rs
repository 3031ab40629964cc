//! `ironflow inspect --dap`: the Debug Adapter Protocol over stdin/stdout, so an editor (VS
//! Code) opens a run like a program. The run is the one thread; its steps up to the cursor are
//! the stack frames (newest on top); a frame's scopes are the step (status, output, error) and
//! the run (status, input); "next" (step over) moves the cursor one history entry forward,
//! "stepBack" one back, "continue" to the end.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

use super::{InspectOptions, Move, Session};
use crate::client::{Client, ClientError};

const THREAD_ID: i64 = 1;
/// Variable references: a frame's step scope is `STEP_SCOPE + frame`, its run scope
/// `RUN_SCOPE`; a nested value is `NESTED + index` into the handles handed out.
const RUN_SCOPE: i64 = 1;
const STEP_SCOPE: i64 = 1_000;
const NESTED: i64 = 1_000_000;

/// Reads one message (`Content-Length: N\r\n\r\n` + N bytes); `None` at the end of input.
pub fn read_message(input: &mut impl BufRead) -> std::io::Result<Option<Value>> {
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            if length.is_some() {
                break;
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            length = v.trim().parse().ok();
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    input.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body).ok())
}

pub fn write_message(out: &mut impl Write, message: &Value) -> std::io::Result<()> {
    let body = message.to_string();
    write!(out, "Content-Length: {}\r\n\r\n{body}", body.len())?;
    out.flush()
}

struct Adapter {
    session: Session,
    seq: i64,
    /// Values behind nested variable references.
    handles: Vec<Value>,
}

impl Adapter {
    fn next_seq(&mut self) -> i64 {
        self.seq += 1;
        self.seq
    }

    fn response(&mut self, request: &Value, body: Value) -> Value {
        json!({
            "seq": self.next_seq(), "type": "response", "request_seq": request["seq"],
            "success": true, "command": request["command"], "body": body,
        })
    }

    fn failure(&mut self, request: &Value, message: &str) -> Value {
        json!({
            "seq": self.next_seq(), "type": "response", "request_seq": request["seq"],
            "success": false, "command": request["command"], "message": message,
        })
    }

    fn event(&mut self, event: &str, body: Value) -> Value {
        json!({"seq": self.next_seq(), "type": "event", "event": event, "body": body})
    }

    fn stopped(&mut self, reason: &str) -> Value {
        let description = self
            .session
            .entries
            .get(self.session.cursor)
            .map(|e| e.summary.clone())
            .unwrap_or_default();
        self.event(
            "stopped",
            json!({"reason": reason, "threadId": THREAD_ID, "description": description, "allThreadsStopped": true}),
        )
    }

    /// A value as a DAP variable (objects and arrays expandable).
    fn variable(&mut self, name: &str, value: &Value) -> Value {
        let reference = match value {
            Value::Object(m) if !m.is_empty() => {
                self.handles.push(value.clone());
                NESTED + self.handles.len() as i64 - 1
            }
            Value::Array(a) if !a.is_empty() => {
                self.handles.push(value.clone());
                NESTED + self.handles.len() as i64 - 1
            }
            _ => 0,
        };
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        json!({"name": name, "value": shown, "variablesReference": reference})
    }

    /// The steps up to the cursor, newest first (the stack).
    fn frames(&self) -> Vec<Value> {
        let mut steps = self.session.steps();
        steps.reverse();
        steps
    }

    fn variables(&mut self, reference: i64) -> Vec<Value> {
        if reference == RUN_SCOPE {
            let state = self.session.state.clone();
            let current = self.session.current.clone();
            return vec![
                self.variable("status", &state["status"]),
                self.variable("at", &state["timestamp"]),
                self.variable("input", &state["input"]),
                self.variable("function", &current["function_id"]),
                self.variable("status now", &current["status"]),
            ];
        }
        if (STEP_SCOPE..NESTED).contains(&reference) {
            let frame = usize::try_from(reference - STEP_SCOPE).unwrap_or(usize::MAX);
            let Some(step) = self.frames().get(frame).cloned() else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (name, key) in [
                ("status", "status"),
                ("output", "output"),
                ("error", "error"),
                ("original output", "originalOutput"),
                ("injected", "injected"),
                ("patched", "patched"),
                ("duration ms", "durationMs"),
                ("step id", "stepId"),
            ] {
                if !step[key].is_null() {
                    out.push(self.variable(name, &step[key]));
                }
            }
            return out;
        }
        let index = usize::try_from(reference - NESTED).unwrap_or(usize::MAX);
        let Some(value) = self.handles.get(index).cloned() else {
            return Vec::new();
        };
        match &value {
            Value::Object(m) => m.iter().map(|(k, v)| self.variable(k, v)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| self.variable(&format!("[{i}]"), v))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Answers one request; returns the messages to send and whether to stop.
    async fn handle(&mut self, request: &Value) -> (Vec<Value>, bool) {
        let command = request["command"].as_str().unwrap_or_default();
        let args = &request["arguments"];
        let mut out = Vec::new();
        match command {
            "initialize" => {
                let body = json!({
                    "supportsConfigurationDoneRequest": true,
                    "supportsStepBack": true,
                    "supportsRestartFrame": false,
                });
                out.push(self.response(request, body));
                out.push(self.event("initialized", json!({})));
            }
            "launch" | "attach" => {
                let r = match args.get("at").and_then(Value::as_str) {
                    Some(at) => self.session.go_to_time(at).await,
                    None => Ok(()),
                };
                match r {
                    Ok(()) => {
                        out.push(self.response(request, json!({})));
                        out.push(self.stopped("entry"));
                    }
                    Err(e) => out.push(self.failure(request, &e.to_string())),
                }
            }
            "configurationDone" | "setBreakpoints" | "setExceptionBreakpoints" => {
                out.push(self.response(request, json!({"breakpoints": []})));
            }
            "threads" => {
                let name = format!("run {}", self.session.run);
                out.push(self.response(
                    request,
                    json!({"threads": [{"id": THREAD_ID, "name": name}]}),
                ));
            }
            "stackTrace" => {
                let frames: Vec<Value> = self
                    .frames()
                    .iter()
                    .enumerate()
                    .map(|(i, step)| {
                        json!({
                            "id": i, "line": step["sequence"].as_i64().unwrap_or(0) + 1, "column": 1,
                            "name": format!("{} [{}]", step["name"].as_str().unwrap_or("?"), step["status"].as_str().unwrap_or("?")),
                        })
                    })
                    .collect();
                let total = frames.len();
                out.push(self.response(
                    request,
                    json!({"stackFrames": frames, "totalFrames": total}),
                ));
            }
            "scopes" => {
                let frame = args["frameId"].as_i64().unwrap_or(0);
                out.push(self.response(
                    request,
                    json!({"scopes": [
                        {"name": "Step", "variablesReference": STEP_SCOPE + frame, "expensive": false},
                        {"name": "Run", "variablesReference": RUN_SCOPE, "expensive": false},
                    ]}),
                ));
            }
            "variables" => {
                let reference = args["variablesReference"].as_i64().unwrap_or(0);
                let variables = self.variables(reference);
                out.push(self.response(request, json!({"variables": variables})));
            }
            "next" | "stepIn" | "stepOut" | "stepBack" | "continue" | "reverseContinue" => {
                let m = match command {
                    "stepBack" => Move::Previous,
                    "continue" => Move::Last,
                    "reverseContinue" => Move::First,
                    _ => Move::Next,
                };
                let at_end = self.session.cursor + 1 >= self.session.entries.len();
                match self.session.go(m).await {
                    Ok(()) => {
                        self.handles.clear();
                        out.push(self.response(request, json!({"allThreadsContinued": true})));
                        out.push(self.stopped(
                            if command == "continue" || (at_end && m == Move::Next) {
                                "pause"
                            } else {
                                "step"
                            },
                        ));
                    }
                    Err(e) => out.push(self.failure(request, &e.to_string())),
                }
            }
            "pause" => {
                out.push(self.response(request, json!({})));
                out.push(self.stopped("pause"));
            }
            "disconnect" | "terminate" => {
                out.push(self.response(request, json!({})));
                return (out, true);
            }
            other => {
                let message = format!("ironflow inspect does not support '{other}'");
                out.push(self.failure(request, &message));
            }
        }
        (out, false)
    }
}

/// Serves one debug session on stdin/stdout until `disconnect` or the end of input.
pub async fn serve(client: Client, options: InspectOptions) -> Result<(), ClientError> {
    let session = Session::open(client, &options).await?;
    let mut adapter = Adapter {
        session,
        seq: 0,
        handles: Vec::new(),
    };
    let (requests_tx, mut requests) = tokio::sync::mpsc::channel::<Value>(16);
    // stdin is read on a thread of its own (blocking reads), requests handed over one by one.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        while let Ok(Some(message)) = read_message(&mut input) {
            if requests_tx.blocking_send(message).is_err() {
                break;
            }
        }
    });
    let stdout = std::io::stdout();
    while let Some(request) = requests.recv().await {
        let (messages, done) = adapter.handle(&request).await;
        let mut out = stdout.lock();
        for m in &messages {
            write_message(&mut out, m)
                .map_err(|e| ClientError::Invalid(format!("writing to stdout: {e}")))?;
        }
        if done {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_with_their_length() {
        let mut buf = Vec::new();
        write_message(&mut buf, &json!({"seq": 1, "type": "request"})).expect("present");
        let text = String::from_utf8(buf.clone()).expect("present");
        assert!(text.starts_with("Content-Length: 26\r\n\r\n"), "{text}");
        let mut reader = std::io::BufReader::new(&buf[..]);
        assert_eq!(
            read_message(&mut reader).expect("present"),
            Some(json!({"seq": 1, "type": "request"}))
        );
        assert_eq!(read_message(&mut reader).expect("present"), None);
    }
}
