//! `ironflow inspect`: a debugger for one run over the server's time-travel API. The session
//! (this module) holds the run's timeline, a cursor on it and the run's state at the cursor
//! (`GetRunStateAt` at the cursor entry's instant); `tui` draws it and maps keys to moves, and
//! `dap` exposes the same session over the Debug Adapter Protocol.

pub mod dap;
pub mod tui;

use serde_json::Value;

use crate::client::{Client, ClientError, encode_payload};

/// What `ironflow inspect` was asked for.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub run: String,
    /// Put the cursor at the last entry at or before this instant (RFC 3339).
    pub at: Option<String>,
    /// Start at the first entry and advance on a clock.
    pub replay: bool,
    /// Replay speed, entries per second.
    pub speed: f64,
}

/// One timeline entry as the session shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: String,
    pub at: String,
    pub kind: String,
    pub step_name: String,
    pub summary: String,
    pub significant: bool,
}

impl Entry {
    fn from_json(e: &Value) -> Self {
        let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
        Self {
            seq: text("id"),
            at: text("timestamp"),
            kind: text("eventType"),
            step_name: text("stepName"),
            summary: text("summary"),
            significant: e["significant"] == true,
        }
    }

    /// A failure a person jumps to (`n`): failed steps, failed attempts and runs.
    pub fn is_failure(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "step.failed" | "run.failed" | "run.retrying"
        )
    }
}

/// Where the cursor goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Next,
    Previous,
    First,
    Last,
    NextFailure,
    PreviousFailure,
}

/// The cursor after a move on `entries` (pure, so the keys' meaning is unit-tested).
pub fn moved(entries: &[Entry], cursor: usize, m: Move) -> usize {
    let last = entries.len().saturating_sub(1);
    match m {
        Move::Next => (cursor + 1).min(last),
        Move::Previous => cursor.saturating_sub(1),
        Move::First => 0,
        Move::Last => last,
        Move::NextFailure => entries
            .iter()
            .enumerate()
            .skip(cursor + 1)
            .find(|(_, e)| e.is_failure())
            .map_or(cursor, |(i, _)| i),
        Move::PreviousFailure => entries
            .iter()
            .enumerate()
            .take(cursor)
            .rev()
            .find(|(_, e)| e.is_failure())
            .map_or(cursor, |(i, _)| i),
    }
}

/// The last entry at or before `at` (RFC 3339 instants compare as text: the server writes
/// fixed-width UTC), or the first one.
pub fn entry_at(entries: &[Entry], at: &str) -> usize {
    let wanted = normalize(at);
    entries
        .iter()
        .rposition(|e| normalize(&e.at) <= wanted)
        .unwrap_or(0)
}

fn normalize(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        })
        .unwrap_or_else(|_| at.to_owned())
}

/// A run being inspected.
pub struct Session {
    pub client: Client,
    pub run: String,
    pub entries: Vec<Entry>,
    pub cursor: usize,
    /// `GetRunStateAt` at the cursor (payloads decoded).
    pub state: Value,
    /// The run as it is now (`GET /api/v1/runs/{id}`).
    pub current: Value,
    /// The selected step in the state pane.
    pub step: usize,
}

impl Session {
    pub async fn open(client: Client, options: &InspectOptions) -> Result<Self, ClientError> {
        let current = client.run(&options.run).await?;
        let mut session = Self {
            client,
            run: options.run.clone(),
            entries: Vec::new(),
            cursor: 0,
            state: Value::Null,
            current,
            step: 0,
        };
        session.reload_timeline().await?;
        session.cursor = match (&options.at, options.replay) {
            (_, true) => 0,
            (Some(at), false) => entry_at(&session.entries, at),
            (None, false) => session.entries.len().saturating_sub(1),
        };
        session.load_state().await?;
        Ok(session)
    }

    /// Reads the timeline again (a live run grows); true when it has new entries.
    pub async fn reload_timeline(&mut self) -> Result<bool, ClientError> {
        let entries: Vec<Entry> = self
            .client
            .timeline(&self.run)
            .await?
            .iter()
            .map(Entry::from_json)
            .collect();
        let grew = entries.len() != self.entries.len();
        self.entries = entries;
        self.cursor = self.cursor.min(self.entries.len().saturating_sub(1));
        Ok(grew)
    }

    /// The instant of the cursor entry.
    pub fn cursor_at(&self) -> Option<&str> {
        self.entries.get(self.cursor).map(|e| e.at.as_str())
    }

    pub async fn load_state(&mut self) -> Result<(), ClientError> {
        let at = self.cursor_at().map(str::to_owned);
        self.state = self.client.state_at(&self.run, at.as_deref()).await?;
        let steps = self.steps().len();
        self.step = self.step.min(steps.saturating_sub(1));
        Ok(())
    }

    pub async fn go(&mut self, m: Move) -> Result<(), ClientError> {
        let cursor = moved(&self.entries, self.cursor, m);
        if cursor != self.cursor {
            self.cursor = cursor;
            self.load_state().await?;
        }
        Ok(())
    }

    pub async fn go_to_time(&mut self, at: &str) -> Result<(), ClientError> {
        chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
            ClientError::Invalid(format!("'{at}' is not an RFC 3339 instant ({e})"))
        })?;
        self.cursor = entry_at(&self.entries, at);
        self.load_state().await
    }

    /// The steps of the state at the cursor.
    pub fn steps(&self) -> Vec<Value> {
        self.state["steps"].as_array().cloned().unwrap_or_default()
    }

    pub fn selected_step(&self) -> Option<Value> {
        self.steps().get(self.step).cloned()
    }

    pub async fn refresh_current(&mut self) -> Result<(), ClientError> {
        self.current = self.client.run(&self.run).await?;
        Ok(())
    }

    pub async fn pause(&mut self) -> Result<String, ClientError> {
        let out = self
            .client
            .call(
                "IronflowService",
                "PauseRun",
                &serde_json::json!({"run_id": self.run}),
            )
            .await?;
        self.refresh_current().await?;
        Ok(format!("pause: {}", out["status"].as_str().unwrap_or("?")))
    }

    pub async fn resume(&mut self) -> Result<String, ClientError> {
        self.client
            .call(
                "IronflowService",
                "ResumeRun",
                &serde_json::json!({"run_id": self.run}),
            )
            .await?;
        self.refresh_current().await?;
        Ok("resumed".into())
    }

    /// Sets a step's output: an injection when the run is paused, a patch otherwise.
    pub async fn edit_step(
        &mut self,
        step_id: &str,
        output: &Value,
    ) -> Result<String, ClientError> {
        self.refresh_current().await?;
        let verb = if self.current["status"] == "paused" {
            self.client
                .call(
                    "IronflowService",
                    "InjectStepOutput",
                    &serde_json::json!({"run_id": self.run, "step_id": step_id, "new_output": encode_payload(output), "reason": "ironflow inspect"}),
                )
                .await?;
            "injected"
        } else {
            self.client
                .call(
                    "IronflowService",
                    "PatchStep",
                    &serde_json::json!({"step_id": format!("{}:{step_id}", self.run), "output_value": output, "reason": "ironflow inspect"}),
                )
                .await?;
            "patched"
        };
        self.reload_timeline().await?;
        self.cursor = self.entries.len().saturating_sub(1);
        self.load_state().await?;
        Ok(format!("step {step_id}: output {verb}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: &str, at: &str) -> Entry {
        Entry {
            seq: String::new(),
            at: at.into(),
            kind: kind.into(),
            step_name: String::new(),
            summary: String::new(),
            significant: false,
        }
    }

    #[test]
    fn moves_stay_on_the_timeline_and_jump_to_failures() {
        let t = vec![
            e("run.created", "2026-01-01T00:00:00.000000Z"),
            e("step.completed", "2026-01-01T00:00:01.000000Z"),
            e("step.failed", "2026-01-01T00:00:02.000000Z"),
            e("run.retrying", "2026-01-01T00:00:02.000000Z"),
            e("run.completed", "2026-01-01T00:00:03.000000Z"),
        ];
        assert_eq!(moved(&t, 0, Move::Previous), 0);
        assert_eq!(moved(&t, 4, Move::Next), 4);
        assert_eq!(moved(&t, 0, Move::NextFailure), 2);
        assert_eq!(moved(&t, 2, Move::NextFailure), 3);
        assert_eq!(moved(&t, 3, Move::NextFailure), 3, "no later failure: stay");
        assert_eq!(moved(&t, 4, Move::PreviousFailure), 3);
        assert_eq!(entry_at(&t, "2026-01-01T00:00:01.500Z"), 1);
        assert_eq!(entry_at(&t, "2026-01-01T01:00:00+01:00"), 0);
        assert_eq!(entry_at(&t, "2030-01-01T00:00:00Z"), 4);
    }
}
