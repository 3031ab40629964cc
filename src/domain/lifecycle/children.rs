//! Parents and children: how a parent's waiting `invoke` step ends when its child ends, and
//! the request a yield makes to start a child run.

use std::time::Duration;

use serde_json::Value;

use super::{Change, ParentLink, RunFacts, Transition};
use crate::domain::run::RunStatus;
use crate::ids::{EnvId, RunId};

/// How a waiting step ends.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResolution {
    pub status: &'static str,
    pub output: Option<Value>,
    pub error: Option<Value>,
}

/// The parent's step resolution for a child that reached `status`: its output when it
/// completed, otherwise a non-retryable error naming the child and why it ended.
pub fn child_outcome(
    child: &RunFacts,
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&Value>,
) -> StepResolution {
    if status == RunStatus::Completed {
        return StepResolution {
            status: "completed",
            output: Some(output.cloned().unwrap_or(Value::Null)),
            error: None,
        };
    }
    let cause = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(status.as_str())
        .to_owned();
    StepResolution {
        status: "failed",
        output: None,
        error: Some(serde_json::json!({
            "message": format!("invoked function '{}' {}", child.function_id, status.as_str()),
            "function_id": child.function_id.to_string(),
            "child_run_id": child.id.to_string(),
            "cause": cause,
            "retryable": false,
        })),
    }
}

/// The parent's step ends as resolved, and the parent is claimable again (if still parked).
pub fn resume_parent(
    env: &EnvId,
    parent: &ParentLink,
    child: &RunId,
    resolution: &StepResolution,
) -> Transition {
    let mut t = Transition::default();
    t.push(Change::ResolveStep {
        run: parent.run.clone(),
        env: env.clone(),
        step_id: parent.step_id.clone(),
        status: resolution.status,
        output: resolution.output.clone(),
        error: resolution.error.clone(),
    });
    t.push(Change::Resume {
        run: parent.run.clone(),
        env: env.clone(),
        reason: serde_json::json!({"step_id": parent.step_id, "reason": "child_ended", "child_run_id": child.to_string()}),
    });
    t.effects.work_ready = true;
    t
}

/// A yield asking for a child run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRequest {
    pub parent: RunId,
    pub env: EnvId,
    /// The parent's step that waits for the child; `None` for `invoke_async`.
    pub waiting_step: Option<String>,
    pub function_id: String,
    pub input: Value,
    pub child: RunId,
    pub timeout: Option<Duration>,
}

/// The error of an invoke step whose function does not exist.
pub fn unknown_function_error(function_id: &str) -> Value {
    serde_json::json!({
        "message": format!("function '{function_id}' is not registered"),
        "retryable": false,
    })
}
