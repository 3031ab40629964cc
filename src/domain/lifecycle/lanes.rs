//! Concurrency lanes: when a slot frees, the oldest runs waiting for capacity are admitted, up
//! to the lane's limit.

use std::sync::OnceLock;

use serde_json::Value;

use super::{Change, LaneRef, Transition, run_entry};
use crate::domain::expression::{Bindings, lane_key};
use crate::domain::function::FunctionDefinition;
use crate::domain::history::HistoryKind;
use crate::domain::run::RunStatus;
use crate::ids::RunId;

/// Admits the first of `blocked` (oldest first) while the lane has room; `active` counts the
/// lane's admitted runs, read under the lane's lock.
pub fn promote(lane: &LaneRef, active: i64, blocked: &[RunId]) -> Transition {
    let mut t = Transition::default();
    if lane.limit <= 0 {
        return t;
    }
    let free = usize::try_from(i64::from(lane.limit) - active).unwrap_or(0);
    for run in blocked.iter().take(free) {
        t.push(Change::Unblock { run: run.clone() });
        t.push(Change::SetRunStatus {
            run: run.clone(),
            status: RunStatus::Running,
        });
        let payload = serde_json::json!({"from": "waiting_for_capacity", "to": "running"});
        t.history(run_entry(
            &lane.env,
            HistoryKind::RunStatusChanged,
            run,
            payload,
        ));
        t.effects.work_ready = true;
    }
    t
}

/// The lane a new run of `definition` joins, as (key, limit): an actor key's lane of one per key
/// value, else its concurrency limit's, keyed by the CEL key over the triggering event (`event`:
/// converted once per event, shared by every function it starts; `event_json` makes it), else
/// none. Runs started by events and children started by `invoke` join lanes alike.
pub fn lane_for(
    definition: &FunctionDefinition,
    data: &Value,
    event: &OnceLock<Bindings>,
    event_json: impl FnOnce() -> Value,
) -> Option<(String, i32)> {
    if !definition.actor_key.trim().is_empty() {
        let key = crate::domain::debounce::path_value(&definition.actor_key, data);
        return Some((key, 1));
    }
    let c = definition.concurrency.as_ref().filter(|c| c.limit > 0)?;
    let bindings = event.get_or_init(|| Bindings::for_json_event(&event_json()));
    Some((lane_key(&c.key, bindings), c.limit))
}

/// How many blocked runs a promotion may look at: the free slots.
pub fn free_slots(lane: &LaneRef, active: i64) -> i64 {
    (i64::from(lane.limit) - active).max(0)
}
