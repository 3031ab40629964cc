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
    /// A person asked a running run to pause at its next step boundary.
    RunPauseRequested,
    /// The run is paused (at once, at a step boundary, or because its retries ran out under
    /// `on_exhausted = "pause"`).
    RunPaused,
    /// A person resumed a paused or failed run (optionally from a step).
    RunUnpaused,
    /// Steps from a given one on were dropped so that they run again (`ResumeRun{from_step}`).
    StepsReset,
    /// A paused run's step output replaced by a person (`InjectStepOutput`).
    StepInjected,
    /// A step's output edited by a person (`PatchStep`).
    StepPatched,
    /// Payloads replaced by the redaction marker (the one sanctioned rewrite of the history).
    StepRedacted,
    RunRedacted,
    EventRedacted,
    RunDeleted,
    FunctionStatusChanged,
    FunctionRolledBack,
    FunctionDeleted,
    /// A stream ended by its tombstone (`DeleteStream`), with `purge` saying whether its events went.
    StreamDeleted,
    /// An event schema registered or replaced (`payload.status`: created, updated).
    SchemaRegistered,
    SchemaDeleted,
    /// A projection registered, changed, paused, resumed, rebuilt or deleted
    /// (`payload.change_type`).
    ProjectionChanged,
    /// A projection stopped on an event that kept failing (`payload.error`).
    ProjectionFailed,
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
            Self::RunPauseRequested => "run.pause_requested",
            Self::RunPaused => "run.paused",
            Self::RunUnpaused => "run.unpaused",
            Self::StepsReset => "steps.reset",
            Self::StepInjected => "step.injected",
            Self::StepPatched => "step.patched",
            Self::StepRedacted => "step.redacted",
            Self::RunRedacted => "run.redacted",
            Self::EventRedacted => "event.redacted",
            Self::RunDeleted => "run.deleted",
            Self::FunctionStatusChanged => "function.status_changed",
            Self::FunctionRolledBack => "function.rolled_back",
            Self::FunctionDeleted => "function.deleted",
            Self::StreamDeleted => "stream.deleted",
            Self::SchemaRegistered => "schema.registered",
            Self::SchemaDeleted => "schema.deleted",
            Self::ProjectionChanged => "projection.changed",
            Self::ProjectionFailed => "projection.failed",
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
