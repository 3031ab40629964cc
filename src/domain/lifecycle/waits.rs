//! Waits for events: whether an event satisfies a wait, and what satisfying it does.

use serde_json::Value;

use super::{Change, Transition};
use crate::domain::job::lookup_path;
use crate::ids::{EnvId, RunId};

/// A wait as stored: the step, and the match (a data path and the value it must have).
#[derive(Debug, Clone, PartialEq)]
pub struct WaitFacts {
    pub run: RunId,
    pub step_id: String,
    pub match_path: Option<String>,
    pub match_value: Option<Value>,
}

/// Whether `event` (`{id, name, data, …}`) satisfies the wait: no match, or the event's value
/// at the path equals the expected one (loosely: `"42"` matches the number 42).
pub fn satisfies(wait: &WaitFacts, event: &Value) -> bool {
    match (&wait.match_path, &wait.match_value) {
        (Some(path), Some(expected)) => value_matches(lookup_path(event, path), expected),
        _ => true,
    }
}

fn value_matches(actual: Option<&Value>, expected: &Value) -> bool {
    match (actual, expected) {
        (Some(a), e) if a == e => true,
        (Some(a), Value::String(e)) => {
            !a.is_string() && serde_json::from_str::<Value>(e).is_ok_and(|parsed| parsed == *a)
        }
        _ => false,
    }
}

/// The waiting step completes with the event, and its run is claimable again.
pub fn satisfied(env: &EnvId, wait: &WaitFacts, event: &Value) -> Transition {
    let mut t = Transition::default();
    t.push(Change::ResolveStep {
        run: wait.run.clone(),
        env: env.clone(),
        step_id: wait.step_id.clone(),
        status: "completed",
        output: Some(event.clone()),
        error: None,
    });
    t.push(Change::Resume {
        run: wait.run.clone(),
        env: env.clone(),
        reason: serde_json::json!({"step_id": wait.step_id, "reason": "event", "event_id": event.get("id")}),
    });
    t.effects.work_ready = true;
    t
}
