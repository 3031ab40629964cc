//! Concurrency lanes: when a slot frees, the oldest runs waiting for capacity are admitted, up
//! to the lane's limit.

use super::{Change, LaneRef, Transition, run_entry};
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

/// How many blocked runs a promotion may look at: the free slots.
pub fn free_slots(lane: &LaneRef, active: i64) -> i64 {
    (i64::from(lane.limit) - active).max(0)
}
