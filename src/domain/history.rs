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
}

impl HistoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventReceived => "event.received",
            Self::FunctionRegistered => "function.registered",
            Self::RunCreated => "run.created",
            Self::RunStatusChanged => "run.status_changed",
            Self::RunCancelled => "run.cancelled",
        }
    }
}

/// One entry to append. The store assigns `seq` and `recorded_at`.
#[derive(Debug, Clone)]
pub struct NewHistoryEntry {
    pub env_id: EnvId,
    pub kind: HistoryKind,
    pub run_id: Option<RunId>,
    pub function_id: Option<FunctionId>,
    pub event_id: Option<EventId>,
    pub payload: serde_json::Value,
}
