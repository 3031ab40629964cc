//! Records the store reads and writes, independent of the backend.

use serde_json::Value;
use sqlx::types::Json;

use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{ApiKeyId, EnvId, EventId, FunctionId, OrgId, ProjectId, RunId};

#[derive(Debug, Clone)]
pub struct EventRecord {
    pub seq: i64,
    pub id: EventId,
    pub env_id: EnvId,
    pub name: String,
    pub data: Value,
    pub metadata: Value,
    pub source: String,
    pub idempotency_key: Option<String>,
    pub version: i32,
    pub received_at: Ts,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub env_id: EnvId,
    pub name: String,
    pub data: Value,
    pub metadata: Value,
    pub source: String,
    pub idempotency_key: Option<String>,
    pub version: i32,
    pub received_at: Ts,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub status: RunStatus,
    pub max_attempts: i32,
    /// Set when the function has a concurrency limit.
    pub lane: Option<Lane>,
}

#[derive(Debug, Clone)]
pub enum EventOutcome {
    Stored {
        event_id: EventId,
        run_ids: Vec<RunId>,
        effects: Effects,
    },
    /// The idempotency key was seen before: the first emit's result, nothing new written.
    Duplicate {
        event_id: EventId,
        run_ids: Vec<RunId>,
    },
}

#[derive(Debug, Clone)]
pub enum CancelOutcome {
    Cancelled(RunRecord),
    /// The run had already ended; it is returned unchanged.
    AlreadyEnded(RunRecord),
    NotFound,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub page: PageRequest,
    pub name: Option<String>,
    pub names: Option<Vec<String>>,
    pub source: Option<String>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    pub search: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventNameQuery {
    pub source: Option<String>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    pub scan_cap: i64,
}

#[derive(Debug, Clone)]
pub struct EventNameCount {
    pub name: String,
    pub count: i64,
}

/// Row shapes shared by both backends (sqlx's derive is generic over the row type).
/// A job the timer found due, as read under its row lock.
#[derive(sqlx::FromRow)]
pub(crate) struct DueJobRow {
    pub run_id: String,
    pub env_id: String,
    pub state: String,
    pub due_at: Ts,
    pub timeout_at: Option<Ts>,
    pub lease_expires_at: Option<Ts>,
}

impl DueJobRow {
    pub fn facts(&self) -> crate::domain::job::TimerFacts {
        crate::domain::job::TimerFacts {
            leased: self.state == "leased",
            parked: self.state == "parked",
            due_at: self.due_at,
            timeout_at: self.timeout_at,
            lease_expires_at: self.lease_expires_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub seq: i64,
    pub id: String,
    pub env_id: String,
    pub name: String,
    pub data: Json<Value>,
    pub metadata: Json<Value>,
    pub source: String,
    pub idempotency_key: Option<String>,
    pub version: i32,
    pub received_at: Ts,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> Self {
        Self {
            seq: r.seq,
            id: EventId::from_stored(r.id),
            env_id: EnvId::from_stored(r.env_id),
            name: r.name,
            data: r.data.0,
            metadata: r.metadata.0,
            source: r.source,
            idempotency_key: r.idempotency_key,
            version: r.version,
            received_at: r.received_at,
        }
    }
}

/// A concurrency lane a run is admitted to: at most `limit` active runs per (function, key).
#[derive(Debug, Clone)]
pub struct Lane {
    pub key: String,
    pub limit: i32,
}

/// A pull worker's registration.
#[derive(Debug, Clone)]
pub struct WorkerRegistration {
    pub env_id: EnvId,
    pub id: String,
    pub hostname: String,
    pub function_ids: Vec<String>,
    pub max_concurrent: i32,
    pub labels: Value,
    pub version: Value,
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub id: String,
    pub hostname: String,
    pub function_ids: Vec<String>,
    pub max_concurrent: i32,
    pub labels: Value,
    pub version: Value,
    pub registered_at: Ts,
    pub last_heartbeat_at: Ts,
}

/// What a poll asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub env_id: EnvId,
    pub worker_id: String,
    pub function_ids: Vec<String>,
    pub limit: i64,
    pub lease_expires_at: Ts,
    /// Only jobs of functions in this mode: pull workers never get push functions' jobs and
    /// the push dispatcher never gets pull functions' jobs.
    pub mode: crate::domain::function::ExecutionMode,
}

/// A dispatched job with everything the worker needs to replay the run.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub dispatch_id: String,
    pub execution_seq: i64,
    pub lease_token: String,
    pub lease_expires_at: Ts,
    pub run: RunRecord,
    pub event: Option<EventRecord>,
    pub completed_steps: Vec<StepRecord>,
    pub step_sequence_base: i64,
    pub definition: Option<FunctionDefinition>,
    /// The declared secrets' values, filled in by the engine (the store only holds ciphertext).
    pub secrets: std::collections::BTreeMap<String, String>,
}

impl ClaimedJob {
    /// What happens when the attempts run out (`fail` unless the function says otherwise), as
    /// both job protocols carry it.
    pub fn on_exhausted(&self) -> String {
        self.definition
            .as_ref()
            .and_then(|d| d.retry.as_ref())
            .map(|r| r.on_exhausted.clone())
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| "fail".to_owned())
    }

    /// The triggering event as both job protocols carry it (pull assignments and push
    /// requests). Optional keys are omitted, never null (the SDK rejects null); a run started
    /// by an invoke carries its input as `ironflow/function.invoked`.
    pub fn event_json(&self) -> Value {
        let run = &self.run;
        match &self.event {
            Some(e) => {
                let mut ev = serde_json::json!({
                    "id": e.id, "name": e.name, "data": e.data, "timestamp": e.received_at.to_rfc3339(),
                    "version": e.version.max(1), "source": e.source, "metadata": e.metadata,
                });
                if let Some(key) = &e.idempotency_key {
                    ev["idempotency_key"] = serde_json::json!(key);
                }
                ev
            }
            None => serde_json::json!({
                "id": run.id, "name": "ironflow/function.invoked", "data": run.input,
                "timestamp": run.created_at.to_rfc3339(), "version": 1, "source": "invoke",
            }),
        }
    }
}

/// The result of applying an ack or a report.
#[derive(Debug, Clone)]
pub enum FenceOutcome {
    Accepted(Effects),
    /// The fence did not match the current dispatch (superseded, cancelled or lease lost).
    Stale,
}

/// What other parts of the system must be told after a commit.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// New work became claimable (wake dispatchers).
    pub work_ready: bool,
    /// Runs that reached a terminal status (wake sync waiters).
    pub finished_runs: Vec<RunId>,
    /// Topic messages and events stored (for live fan-out on other nodes).
    pub stored: Vec<(crate::store::StoredKind, i64)>,
}

impl Effects {
    pub fn merge(&mut self, other: Effects) {
        self.work_ready |= other.work_ready;
        self.finished_runs.extend(other.finished_runs);
        self.stored.extend(other.stored);
    }
}

// Moved to their areas; re-exported until every caller names the area module.
pub use super::config::{ConfigChange, ConfigOutcome, ConfigRecord, ConfigWrite};
pub(crate) use super::functions::FunctionRow;
pub use super::functions::{FunctionQuery, FunctionRecord, FunctionRegistration, RegisterOutcome};
pub use super::groups::{ConsumerGroupRecord, GroupClaim, GroupDelivery};
pub use super::history::HistoryRecord;
pub(crate) use super::history::HistoryRow;
pub use super::kv::{BucketRecord, KvEntry, KvWrite, KvWriteOutcome};
pub use super::runs::{ActiveRun, EnvCounts, PageRequest, RunQuery, RunRecord, StepRecord};
pub(crate) use super::runs::{RunRow, StepRow};
pub use super::secrets::SecretMeta;
pub use super::tenancy::{ApiKeyRecord, BootstrapOutcome, BootstrapPlan, EnvironmentRecord};
