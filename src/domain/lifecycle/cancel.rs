//! Cancelling a run: it ends as `cancelled` with its cause, everything a terminal run lets go
//! of is released, and both the status change and the cancel are in the history.

use super::{Change, LaneRef, RunFacts, Transition, release};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::run::RunStatus;
use crate::ids::EventId;

/// What a cancel does to a run in `run.status` (a terminal run is left alone: `None`).
pub fn cancel(
    run: &RunFacts,
    event_id: Option<&EventId>,
    lane: Option<&LaneRef>,
    reason: &str,
) -> Option<Transition> {
    if run.status.is_terminal() {
        return None;
    }
    let mut t = Transition::default();
    t.push(Change::CancelRun {
        run: run.id.clone(),
        env: run.env.clone(),
        reason: reason.to_owned(),
    });
    t.extend(release(run, lane, RunStatus::Cancelled, None, None));
    for (kind, payload) in [
        (
            HistoryKind::RunStatusChanged,
            serde_json::json!({"from": run.status.as_str(), "to": "cancelled"}),
        ),
        (
            HistoryKind::RunCancelled,
            serde_json::json!({"reason": reason}),
        ),
    ] {
        t.history(NewHistoryEntry {
            env_id: run.env.clone(),
            kind,
            run_id: Some(run.id.clone()),
            function_id: Some(run.function_id.clone()),
            event_id: event_id.cloned(),
            payload,
        });
    }
    Some(t)
}
