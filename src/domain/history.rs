//! The kinds of entries in the continuous history (the append-only log).

use serde::{Deserialize, Serialize};

use crate::ids::{EnvId, EventId, FunctionId, RunId};

/// What happened. Stored as the dotted string in `history.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryKind {
    EventReceived,
    FunctionRegistered,
    RunCreated,
    RunStatusChanged,
    RunCancelled,
    RunDispatched,
    StepCompleted,
    StepFailed,
    RunRetrying,
    RunYielded,
    RunResumed,
    RunCompleted,
    RunFailed,
    WorkerRegistered,
    ConfigUpdated,
    ConfigDeleted,
    SecretChanged,
    ConsumerGroupChanged,
    CircuitBreakerOpened,
    CircuitBreakerHalfOpened,
    CircuitBreakerClosed,
    CircuitBreakerReset,
}

impl HistoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventReceived => "event.received",
            Self::FunctionRegistered => "function.registered",
            Self::RunCreated => "run.created",
            Self::RunStatusChanged => "run.status_changed",
            Self::RunCancelled => "run.cancelled",
            Self::RunDispatched => "run.dispatched",
            Self::StepCompleted => "step.completed",
            Self::StepFailed => "step.failed",
            Self::RunRetrying => "run.retrying",
            Self::RunYielded => "run.yielded",
            Self::RunResumed => "run.resumed",
            Self::RunCompleted => "run.completed",
            Self::RunFailed => "run.failed",
            Self::WorkerRegistered => "worker.registered",
            Self::ConfigUpdated => "config.updated",
            Self::ConfigDeleted => "config.deleted",
            Self::SecretChanged => "secret.changed",
            Self::ConsumerGroupChanged => "consumer_group.changed",
            Self::CircuitBreakerOpened => "circuit_breaker.opened",
            Self::CircuitBreakerHalfOpened => "circuit_breaker.half_opened",
            Self::CircuitBreakerClosed => "circuit_breaker.closed",
            Self::CircuitBreakerReset => "circuit_breaker.reset",
        }
    }
}

/// One entry to append. The store assigns `seq` and `recorded_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHistoryEntry {
    pub env_id: EnvId,
    pub kind: HistoryKind,
    pub run_id: Option<RunId>,
    pub function_id: Option<FunctionId>,
    pub event_id: Option<EventId>,
    pub payload: serde_json::Value,
}
