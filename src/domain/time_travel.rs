//! Time travel: a run's state at any instant, computed as a fold of its history entries up to
//! that instant (never read from the current rows), and its history as a timeline. The same
//! instant always gives the same state, whatever happened later — edits are new entries, and
//! only a redaction rewrites older payloads (to its marker).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::job::step_name;
use crate::domain::time::Ts;

/// One history entry of a run, as the fold reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: i64,
    pub recorded_at: Ts,
    pub kind: String,
    pub payload: Value,
}

/// What does not change over a run's life (its id, function, input, creation).
#[derive(Debug, Clone, PartialEq)]
pub struct RunIdentity {
    pub run_id: String,
    pub function_id: String,
    pub input: Value,
    pub created_at: Ts,
}

/// A step as it was at the instant.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAt {
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i64,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    /// What the worker recorded, once a person edited the output.
    pub original_output: Option<Value>,
    pub started_at: Option<Ts>,
    pub completed_at: Option<Ts>,
    pub injected: bool,
    pub patched: bool,
}

impl StepAt {
    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.completed_at) {
            (Some(s), Some(e)) => Some((e.0 - s.0).num_milliseconds().max(0)),
            _ => None,
        }
    }
}

/// A run as it was at the instant.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAt {
    pub at: Ts,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i64,
    pub pause_requested: bool,
    pub pause_reason: Option<String>,
    /// In sequence order.
    pub steps: Vec<StepAt>,
    /// The newest entry folded in.
    pub last_seq: Option<i64>,
}

/// The state of the run at `at`: every entry recorded at or before it, folded in order.
/// `None` when the run did not exist yet.
pub fn state_at(run: &RunIdentity, entries: &[Entry], at: Ts) -> Option<RunAt> {
    if at < run.created_at {
        return None;
    }
    let mut fold = Fold::new(run, at);
    for entry in entries.iter().filter(|e| e.recorded_at <= at) {
        fold.apply(entry);
    }
    Some(fold.finish())
}

struct Fold<'a> {
    run: &'a RunIdentity,
    state: RunAt,
    steps: BTreeMap<String, StepAt>,
    next_sequence: i64,
    /// Where the job goes back on resume while paused (`queued`, `parked`, `blocked`).
    paused_resume: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn json(v: &Value, key: &str) -> Option<Value> {
    v.get(key).filter(|x| !x.is_null()).cloned()
}

fn ts(v: &Value, key: &str) -> Option<Ts> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| Ts(d.with_timezone(&chrono::Utc)))
}

impl<'a> Fold<'a> {
    fn new(run: &'a RunIdentity, at: Ts) -> Self {
        Self {
            run,
            state: RunAt {
                at,
                status: "running".into(),
                output: None,
                error: None,
                attempt: 1,
                pause_requested: false,
                pause_reason: None,
                steps: Vec::new(),
                last_seq: None,
            },
            steps: BTreeMap::new(),
            next_sequence: 0,
            paused_resume: None,
        }
    }

    fn step(&mut self, step_id: &str, p: &Value) -> &mut StepAt {
        let sequence = p
            .get("sequence")
            .and_then(Value::as_i64)
            .unwrap_or(self.next_sequence);
        let run_id = self.run.run_id.clone();
        let step = self
            .steps
            .entry(step_id.to_owned())
            .or_insert_with(|| StepAt {
                step_id: step_id.to_owned(),
                name: text(p, "name").unwrap_or_else(|| step_name(&run_id, step_id)),
                step_type: text(p, "type").unwrap_or_else(|| "invoke".into()),
                sequence,
                status: "running".into(),
                output: None,
                error: None,
                original_output: None,
                started_at: None,
                completed_at: None,
                injected: false,
                patched: false,
            });
        self.next_sequence = self.next_sequence.max(step.sequence + 1);
        step
    }

    fn apply(&mut self, e: &Entry) {
        let p = &e.payload;
        self.state.last_seq = Some(e.seq);
        match e.kind.as_str() {
            "run.created" => {
                if let Some(status) = text(p, "status") {
                    self.state.status = status;
                }
            }
            "run.dispatched" => {
                // A dispatch ends the run's sleeps (as the store marks its sleeping steps).
                for step in self.steps.values_mut().filter(|s| s.status == "sleeping") {
                    step.status = "completed".into();
                    step.completed_at = Some(e.recorded_at);
                }
                self.state.status = "running".into();
            }
            "run.resumed" => self.state.status = "running".into(),
            "run.status_changed" => {
                if let Some(to) = text(p, "to") {
                    self.state.status = to;
                }
            }
            "run.retrying" => {
                self.state.attempt += 1;
                self.state.error = json(p, "error");
                self.state.status = "running".into();
            }
            "run.yielded" => {
                let Some(step_id) = text(p, "step_id") else {
                    return;
                };
                let kind = text(p, "type").unwrap_or_default();
                let (step_type, status, run_status) = match kind.as_str() {
                    "sleep" => ("sleep", "sleeping", "waiting"),
                    "wait_for_event" => ("wait_for_event", "waiting", "waiting"),
                    "invoke_function" => ("invoke_function", "waiting", "waiting"),
                    _ => ("invoke_function", "completed", "running"),
                };
                let at = e.recorded_at;
                let step = self.step(&step_id, p);
                step.step_type = step_type.into();
                step.status = status.into();
                step.started_at.get_or_insert(at);
                if status == "completed" {
                    step.completed_at = Some(at);
                    step.output =
                        text(p, "child_run_id").map(|id| serde_json::json!({"run_id": id}));
                }
                self.state.status = run_status.into();
            }
            "step.completed" | "step.failed" => {
                let Some(step_id) = text(p, "step_id") else {
                    return;
                };
                let at = e.recorded_at;
                let resolved = p.get("resolved").and_then(Value::as_bool) == Some(true);
                let status = text(p, "status").unwrap_or_else(|| {
                    if e.kind == "step.completed" {
                        "completed".into()
                    } else {
                        "failed".into()
                    }
                });
                if resolved && self.state.status == "paused" {
                    // What a paused run waited for happened: a resume requeues it.
                    self.paused_resume = Some("queued".into());
                }
                let step = self.step(&step_id, p);
                step.status = status;
                step.output = json(p, "output");
                step.error = json(p, "error");
                step.started_at = ts(p, "started_at").or(step.started_at).or(Some(at));
                step.completed_at = ts(p, "ended_at").or(Some(at));
            }
            "step.injected" | "step.patched" => {
                let Some(step_id) = text(p, "step_id") else {
                    return;
                };
                let injected = e.kind == "step.injected";
                let step = self.step(&step_id, p);
                if !step.injected && !step.patched {
                    step.original_output = step.output.clone();
                }
                step.output = json(p, "output");
                step.error = None;
                step.status = "completed".into();
                if injected {
                    step.injected = true;
                } else {
                    step.patched = true;
                }
            }
            "steps.reset" => {
                let from = p.get("from_sequence").and_then(Value::as_i64).unwrap_or(0);
                self.steps.retain(|_, s| s.sequence < from);
                self.next_sequence = from;
            }
            "run.pause_requested" => {
                self.state.pause_requested = true;
                self.state.pause_reason = Some("injection".into());
            }
            "run.paused" => {
                self.state.status = "paused".into();
                self.state.pause_requested = false;
                self.state.pause_reason = text(p, "reason");
                self.paused_resume = text(p, "resume_state");
                if let Some(error) = json(p, "error") {
                    self.state.error = Some(error);
                }
            }
            "run.unpaused" => {
                let from = text(p, "from").unwrap_or_default();
                self.state.pause_requested = false;
                self.state.pause_reason = None;
                if from == "failed" {
                    self.state.output = None;
                    self.state.error = None;
                    self.state.status = "running".into();
                } else if from == "paused" {
                    self.state.status = match self.paused_resume.take().as_deref() {
                        Some("parked") => "waiting",
                        Some("blocked") => "waiting_for_capacity",
                        _ => "running",
                    }
                    .into();
                }
            }
            "run.completed" | "run.failed" => {
                self.state.status = text(p, "status").unwrap_or_else(|| {
                    if e.kind == "run.completed" {
                        "completed".into()
                    } else {
                        "failed".into()
                    }
                });
                self.state.output = json(p, "output");
                self.state.error = json(p, "error");
            }
            "run.cancelled" => self.state.status = "cancelled".into(),
            _ => {}
        }
    }

    fn finish(mut self) -> RunAt {
        let mut steps: Vec<StepAt> = self.steps.into_values().collect();
        steps.sort_by(|a, b| a.sequence.cmp(&b.sequence).then(a.step_id.cmp(&b.step_id)));
        self.state.steps = steps;
        self.state
    }
}

/// One timeline entry: what happened, in a line.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub seq: i64,
    pub kind: String,
    pub step_id: Option<String>,
    pub step_name: Option<String>,
    pub summary: String,
    /// Failures, pauses and edits: what a person looks for first.
    pub significant: bool,
    pub at: Ts,
}

/// The run's history as a timeline, oldest first.
pub fn timeline(run_id: &str, entries: &[Entry]) -> Vec<TimelineEntry> {
    entries.iter().map(|e| timeline_entry(run_id, e)).collect()
}

fn timeline_entry(run_id: &str, e: &Entry) -> TimelineEntry {
    let p = &e.payload;
    let step_id = text(p, "step_id");
    let step_name = step_id
        .as_ref()
        .map(|id| text(p, "name").unwrap_or_else(|| step_name(run_id, id)));
    let step = step_name.clone().unwrap_or_default();
    let reason = text(p, "reason")
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let error = p
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let (summary, significant) = match e.kind.as_str() {
        "run.created" => ("run created".to_owned(), false),
        "run.dispatched" => (
            format!(
                "dispatched to worker {}",
                text(p, "worker_id").unwrap_or_default()
            ),
            false,
        ),
        "step.completed" => (format!("step {step} completed"), false),
        "step.failed" => (format!("step {step} failed{error}"), true),
        "run.yielded" => (
            format!(
                "yielded: {} {step}",
                text(p, "type").unwrap_or_else(|| "yield".into())
            ),
            false,
        ),
        "run.resumed" => (
            format!(
                "resumed ({})",
                text(p, "reason").unwrap_or_else(|| "woken".into())
            ),
            false,
        ),
        "run.retrying" => (
            format!(
                "attempt {} failed; retrying{error}",
                p.get("failed_attempt").and_then(Value::as_i64).unwrap_or(0)
            ),
            true,
        ),
        "run.completed" => ("run completed".to_owned(), false),
        "run.failed" => (format!("run failed{error}"), true),
        "run.cancelled" => (format!("run cancelled{reason}"), true),
        "run.status_changed" => (
            format!(
                "status {} → {}",
                text(p, "from").unwrap_or_default(),
                text(p, "to").unwrap_or_default()
            ),
            false,
        ),
        "run.pause_requested" => (format!("pause requested{reason}"), true),
        "run.paused" => (
            format!("paused ({})", text(p, "reason").unwrap_or_default()),
            true,
        ),
        "run.unpaused" => (
            match text(p, "from_step") {
                Some(from) => format!("resumed from step {from}{reason}"),
                None => format!("resumed{reason}"),
            },
            true,
        ),
        "steps.reset" => (
            format!(
                "steps from {} reset to run again",
                text(p, "from_step").unwrap_or_default()
            ),
            true,
        ),
        "step.injected" => (format!("output of step {step} injected{reason}"), true),
        "step.patched" => (format!("output of step {step} patched{reason}"), true),
        "step.redacted" => ("step payloads redacted".to_owned(), true),
        "run.redacted" => ("run payloads redacted".to_owned(), true),
        "run.deleted" => ("run deleted".to_owned(), true),
        other => (other.to_owned(), false),
    };
    TimelineEntry {
        seq: e.seq,
        kind: e.kind.clone(),
        step_id,
        step_name,
        summary,
        significant,
        at: e.recorded_at,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(ms: i64) -> Ts {
        Ts(chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("instant"))
    }

    fn entry(seq: i64, ms: i64, kind: &str, payload: Value) -> Entry {
        Entry {
            seq,
            recorded_at: at(ms),
            kind: kind.into(),
            payload,
        }
    }

    fn history() -> Vec<Entry> {
        vec![
            entry(1, 0, "run.created", json!({"status": "running"})),
            entry(2, 10, "run.dispatched", json!({})),
            entry(
                3,
                20,
                "step.completed",
                json!({"step_id": "r:a:0", "name": "a", "type": "invoke", "sequence": 0, "output": 1}),
            ),
            entry(
                4,
                30,
                "step.failed",
                json!({"step_id": "r:b:0", "name": "b", "type": "invoke", "sequence": 1, "error": {"message": "no"}}),
            ),
            entry(
                5,
                30,
                "run.failed",
                json!({"status": "failed", "error": {"message": "no"}}),
            ),
            entry(
                6,
                40,
                "step.patched",
                json!({"step_id": "r:b:0", "output": 2}),
            ),
            entry(7, 50, "run.unpaused", json!({"from": "failed"})),
            entry(8, 55, "steps.reset", json!({"from_sequence": 1})),
            entry(
                9,
                60,
                "run.completed",
                json!({"status": "completed", "output": 3}),
            ),
        ]
    }

    fn run() -> RunIdentity {
        RunIdentity {
            run_id: "r".into(),
            function_id: "f".into(),
            input: json!({}),
            created_at: at(0),
        }
    }

    #[test]
    fn the_state_at_an_instant_is_the_fold_of_the_entries_up_to_it() {
        let h = history();
        assert!(
            state_at(&run(), &h, at(-1)).is_none(),
            "before the run existed"
        );
        let s = state_at(&run(), &h, at(25)).expect("present");
        assert_eq!(s.status, "running");
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].output, Some(json!(1)));

        let s = state_at(&run(), &h, at(30)).expect("present");
        assert_eq!(s.status, "failed");
        assert_eq!(s.steps[1].status, "failed");

        let s = state_at(&run(), &h, at(45)).expect("present");
        let b = &s.steps[1];
        assert_eq!(
            (b.status.as_str(), b.output.clone(), b.patched),
            ("completed", Some(json!(2)), true)
        );
        assert_eq!(b.original_output, None, "the failed step had no output");

        let s = state_at(&run(), &h, at(56)).expect("present");
        assert_eq!(s.status, "running");
        assert_eq!(s.steps.len(), 1, "the reset dropped b");
        assert_eq!(
            state_at(&run(), &h, at(60)).expect("present").output,
            Some(json!(3))
        );
    }

    #[test]
    fn later_entries_never_change_an_earlier_state() {
        let h = history();
        for cut in 0..h.len() {
            let t = h[cut].recorded_at;
            let full = state_at(&run(), &h, t);
            let prefix: Vec<Entry> = h.iter().filter(|e| e.recorded_at <= t).cloned().collect();
            assert_eq!(full, state_at(&run(), &prefix, t), "at {t:?}");
        }
    }

    #[test]
    fn the_timeline_marks_failures_and_edits() {
        let t = timeline("r", &history());
        let significant: Vec<&str> = t
            .iter()
            .filter(|e| e.significant)
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            significant,
            [
                "step.failed",
                "run.failed",
                "step.patched",
                "run.unpaused",
                "steps.reset"
            ]
        );
        assert_eq!(t[2].step_name.as_deref(), Some("a"));
        assert_eq!(t[3].summary, "step b failed: no");
    }
}
