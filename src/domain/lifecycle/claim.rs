//! A dispatch starts: the claimed run is running, its sleeps are over, its timeout counts from
//! the first dispatch, and the dispatch is in the history.

use std::time::Duration;

use super::{Change, Transition, run_entry};
use crate::domain::history::HistoryKind;
use crate::domain::time::Ts;
use crate::ids::{EnvId, RunId};

/// `timeout` is the function's run timeout, if it has one.
pub fn dispatched(
    env: &EnvId,
    run: &RunId,
    execution_seq: i64,
    worker_id: &str,
    timeout: Option<Duration>,
    now: Ts,
) -> Transition {
    let mut t = Transition::default();
    t.push(Change::WakeSleepingSteps { run: run.clone() });
    t.push(Change::StartRun { run: run.clone() });
    if let Some(timeout) = timeout.filter(|d| !d.is_zero()) {
        t.push(Change::SetJobTimeout {
            run: run.clone(),
            at: now.plus(timeout),
        });
    }
    let payload = serde_json::json!({"execution_seq": execution_seq, "worker_id": worker_id});
    t.history(run_entry(env, HistoryKind::RunDispatched, run, payload));
    t
}
