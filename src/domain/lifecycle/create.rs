//! New runs: a run and its job inserted together, admitted to its concurrency lane when the
//! lane has room (`queued`), otherwise waiting for capacity (`blocked`).

use serde_json::Value;

use super::{Change, JobState, LaneRef, NewRunRow, Transition};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

/// Everything a new run is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub id: RunId,
    pub env: EnvId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub event_id: Option<EventId>,
    pub event_name: String,
    pub input: Value,
    pub max_attempts: i32,
    pub parent: Option<RunId>,
    /// The parent's step waiting on this run (`invoke`); `None` for `invoke_async`.
    pub parent_step: Option<String>,
    pub lane: Option<LaneRef>,
    /// A throttled run's start ([`crate::domain::throttle::admit`]); `None` starts at once.
    pub not_before: Option<Ts>,
}

/// Whether a run may start in a lane with `active` runs (admitted, leased or parked).
pub fn admits(lane: Option<&LaneRef>, active: i64) -> bool {
    lane.is_none_or(|l| l.limit <= 0 || active < i64::from(l.limit))
}

/// Inserts the run and its job; `lane_active` is the lane's active run count, read under the
/// lane's lock (`None` without a lane).
pub fn create_run(spec: &RunSpec, lane_active: Option<i64>) -> Transition {
    let admitted = admits(spec.lane.as_ref(), lane_active.unwrap_or(0));
    let status = if admitted {
        RunStatus::Running
    } else {
        RunStatus::WaitingForCapacity
    };
    let mut t = Transition::default();
    t.push(Change::InsertRun(NewRunRow {
        id: spec.id.clone(),
        env: spec.env.clone(),
        function_id: spec.function_id.clone(),
        function_version: spec.function_version,
        event_id: spec.event_id.clone(),
        status,
        input: spec.input.clone(),
        max_attempts: spec.max_attempts,
        parent: spec.parent.clone(),
        parent_step: spec.parent_step.clone(),
        job_state: if admitted {
            JobState::Queued
        } else {
            JobState::Blocked
        },
        lane_key: spec.lane.as_ref().map_or(String::new(), |l| l.key.clone()),
        lane_limit: spec.lane.as_ref().map_or(0, |l| l.limit),
        not_before: spec.not_before,
    }));
    t.history(NewHistoryEntry {
        env_id: spec.env.clone(),
        kind: HistoryKind::RunCreated,
        run_id: Some(spec.id.clone()),
        function_id: Some(spec.function_id.clone()),
        event_id: spec.event_id.clone(),
        payload: serde_json::json!({
            "status": status.as_str(),
            "function_version": spec.function_version,
            "event_name": spec.event_name,
            "parent_run_id": spec.parent.as_ref().map(ToString::to_string),
            "concurrency_key": spec.lane.as_ref().map(|l| l.key.clone()),
            "throttled_until": spec.not_before.map(|t| t.to_rfc3339()),
        }),
    });
    t.effects.work_ready = admitted && spec.not_before.is_none();
    t
}
