//! Records the store reads and writes, independent of the backend.

use serde_json::Value;
use sqlx::types::Json;

use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::domain::run::RunStatus;
use crate::ids::{ApiKeyId, EnvId, EventId, FunctionId, OrgId, ProjectId, RunId};
use crate::store::time::Ts;

/// An API key as stored (never the secret itself).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub project_id: ProjectId,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct EnvironmentRecord {
    pub id: EnvId,
    pub project_id: ProjectId,
    pub name: String,
}

/// What first boot creates.
#[derive(Debug, Clone)]
pub struct BootstrapPlan {
    pub org_name: String,
    pub project_name: String,
    pub env_name: String,
    pub key_name: String,
    pub key_prefix: String,
    pub key_hash: String,
}

#[derive(Debug, Clone)]
pub enum BootstrapOutcome {
    /// The database was empty; the tenancy root and the admin key were created.
    Created,
    /// The database already had an organisation; nothing was written.
    AlreadyBootstrapped,
}

#[derive(Debug, Clone)]
pub struct FunctionRecord {
    pub env_id: EnvId,
    pub id: FunctionId,
    pub status: FunctionStatus,
    pub version: i32,
    pub definition: FunctionDefinition,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone)]
pub struct FunctionRegistration {
    pub env_id: EnvId,
    pub id: FunctionId,
    pub definition: FunctionDefinition,
    pub change_reason: String,
}

#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub function: FunctionRecord,
    /// True when the function did not exist before this registration.
    pub created: bool,
    /// True when this registration stored a new version (the first, or a changed definition).
    pub new_version: bool,
}

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
pub struct RunRecord {
    pub seq: i64,
    pub id: RunId,
    pub env_id: EnvId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub event_id: Option<EventId>,
    pub event_name: Option<String>,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub parent_run_id: Option<RunId>,
    pub cancellation_cause: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
}

#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run_id: RunId,
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i32,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub attempt: i32,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone)]
pub struct HistoryRecord {
    pub seq: i64,
    pub recorded_at: Ts,
    pub env_id: EnvId,
    pub kind: String,
    pub run_id: Option<RunId>,
    pub function_id: Option<FunctionId>,
    pub event_id: Option<EventId>,
    pub payload: Value,
}

#[derive(Debug, Clone)]
pub enum CancelOutcome {
    Cancelled(RunRecord),
    /// The run had already ended; it is returned unchanged.
    AlreadyEnded(RunRecord),
    NotFound,
}

/// Keyset page request shared by the list queries: newest first, strictly older than `before_seq`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub before_seq: Option<i64>,
    pub limit: i64,
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
pub struct RunQuery {
    pub page: PageRequest,
    pub function_id: Option<FunctionId>,
    pub statuses: Vec<RunStatus>,
    pub event_id: Option<EventId>,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
}

#[derive(Debug, Clone, Default)]
pub struct FunctionQuery {
    pub status: Option<FunctionStatus>,
    pub after_id: Option<String>,
    pub limit: i64,
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

#[derive(Debug, Clone, Default)]
pub struct EnvCounts {
    pub functions: i64,
    pub active_runs: i64,
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

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub seq: i64,
    pub id: String,
    pub env_id: String,
    pub function_id: String,
    pub function_version: i32,
    pub event_id: Option<String>,
    pub event_name: Option<String>,
    pub status: String,
    pub input: Json<Value>,
    pub output: Option<Json<Value>>,
    pub error: Option<Json<Value>>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub parent_run_id: Option<String>,
    pub cancellation_cause: Option<String>,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct FunctionRow {
    pub env_id: String,
    pub id: String,
    pub status: String,
    pub version: i32,
    pub definition: Json<FunctionDefinition>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub name: String,
    pub step_type: String,
    pub sequence: i32,
    pub status: String,
    pub output: Option<Json<Value>>,
    pub error: Option<Json<Value>>,
    pub attempt: i32,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(sqlx::FromRow)]
pub(crate) struct HistoryRow {
    pub seq: i64,
    pub recorded_at: Ts,
    pub env_id: String,
    pub kind: String,
    pub run_id: Option<String>,
    pub function_id: Option<String>,
    pub event_id: Option<String>,
    pub payload: Json<Value>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub org_id: String,
    pub project_id: String,
    pub name: String,
    pub role: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EnvironmentRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
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

impl TryFrom<RunRow> for RunRecord {
    type Error = crate::store::StoreError;

    fn try_from(r: RunRow) -> Result<Self, Self::Error> {
        let status = r
            .status
            .parse()
            .map_err(|e| crate::store::StoreError::Corrupt(format!("run {}: {e}", r.id)))?;
        Ok(Self {
            seq: r.seq,
            id: RunId::from_stored(r.id),
            env_id: EnvId::from_stored(r.env_id),
            function_id: FunctionId::from_stored(r.function_id),
            function_version: r.function_version,
            event_id: r.event_id.map(EventId::from_stored),
            event_name: r.event_name,
            status,
            input: r.input.0,
            output: r.output.map(|j| j.0),
            error: r.error.map(|j| j.0),
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            parent_run_id: r.parent_run_id.map(RunId::from_stored),
            cancellation_cause: r.cancellation_cause,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
        })
    }
}

impl TryFrom<FunctionRow> for FunctionRecord {
    type Error = crate::store::StoreError;

    fn try_from(r: FunctionRow) -> Result<Self, Self::Error> {
        let status = FunctionStatus::parse(&r.status).ok_or_else(|| {
            crate::store::StoreError::Corrupt(format!("function {}: status '{}'", r.id, r.status))
        })?;
        Ok(Self {
            env_id: EnvId::from_stored(r.env_id),
            id: FunctionId::from_stored(r.id),
            status,
            version: r.version,
            definition: r.definition.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl From<StepRow> for StepRecord {
    fn from(r: StepRow) -> Self {
        Self {
            run_id: RunId::from_stored(r.run_id),
            step_id: r.step_id,
            name: r.name,
            step_type: r.step_type,
            sequence: r.sequence,
            status: r.status,
            output: r.output.map(|j| j.0),
            error: r.error.map(|j| j.0),
            attempt: r.attempt,
            started_at: r.started_at,
            ended_at: r.ended_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<HistoryRow> for HistoryRecord {
    fn from(r: HistoryRow) -> Self {
        Self {
            seq: r.seq,
            recorded_at: r.recorded_at,
            env_id: EnvId::from_stored(r.env_id),
            kind: r.kind,
            run_id: r.run_id.map(RunId::from_stored),
            function_id: r.function_id.map(FunctionId::from_stored),
            event_id: r.event_id.map(EventId::from_stored),
            payload: r.payload.0,
        }
    }
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_stored(r.id),
            org_id: OrgId::from_stored(r.org_id),
            project_id: ProjectId::from_stored(r.project_id),
            name: r.name,
            role: r.role,
        }
    }
}

impl From<EnvironmentRow> for EnvironmentRecord {
    fn from(r: EnvironmentRow) -> Self {
        Self {
            id: EnvId::from_stored(r.id),
            project_id: ProjectId::from_stored(r.project_id),
            name: r.name,
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

/// A KV bucket with its usage.
#[derive(Debug, Clone)]
pub struct BucketRecord {
    pub settings: crate::domain::kv::BucketSettings,
    pub created_at: Ts,
    pub values: i64,
    pub bytes: i64,
}

/// One revision of a key.
#[derive(Debug, Clone)]
pub struct KvEntry {
    pub key: String,
    pub revision: i64,
    pub deleted: bool,
    pub value: Vec<u8>,
    pub created_at: Ts,
}

#[derive(Debug, Clone)]
pub struct KvWrite {
    pub env_id: EnvId,
    pub bucket: String,
    pub key: String,
    /// `None` writes a tombstone (delete).
    pub value: Option<Vec<u8>>,
    pub condition: crate::domain::kv::KvCondition,
}

#[derive(Debug, Clone)]
pub enum KvWriteOutcome {
    Written(KvEntry),
    NoSuchBucket,
    /// The condition did not hold; the key's latest revision (0 when absent).
    ConditionFailed {
        current: i64,
    },
    TooLarge {
        size: usize,
        limit: i64,
    },
    /// The bucket's `max_bytes` would be exceeded.
    BucketFull {
        used: i64,
        limit: i64,
    },
}

/// What a config write does.
#[derive(Debug, Clone)]
pub enum ConfigChange {
    /// Full replacement of the document.
    Replace(serde_json::Map<String, Value>),
    /// Shallow merge of top-level keys (creates the document when absent).
    Merge(serde_json::Map<String, Value>),
    Delete,
}

#[derive(Debug, Clone)]
pub struct ConfigWrite {
    pub env_id: EnvId,
    pub name: String,
    pub change: ConfigChange,
    pub condition: crate::domain::kv::KvCondition,
}

#[derive(Debug, Clone)]
pub struct ConfigRecord {
    pub name: String,
    pub data: Value,
    pub revision: i64,
    pub updated_at: Ts,
}

#[derive(Debug, Clone)]
pub enum ConfigOutcome {
    Written(ConfigRecord),
    Deleted,
    /// The condition did not hold; the current revision (0 when absent).
    ConditionFailed {
        current: i64,
    },
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone)]
pub struct SecretMeta {
    pub name: String,
    pub description: String,
    pub revision: i64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// A consumer group as stored, with the members seen recently.
#[derive(Debug, Clone)]
pub struct ConsumerGroupRecord {
    pub id: String,
    pub env_id: EnvId,
    pub name: String,
    pub settings: crate::domain::group::GroupSettings,
    pub members: i64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// One member's claim on a group's due messages.
#[derive(Debug, Clone)]
pub struct GroupClaim {
    pub group_id: String,
    pub consumer_id: String,
    /// Most unsettled messages the member may hold (those it already holds count).
    pub max_held: i64,
    /// When an unsettled message goes back to the group.
    pub ack_deadline: Ts,
    /// Deliveries a message may have in all; due messages past it become dead letters.
    pub max_deliveries: i32,
    /// Auto-ack groups: what is handed out is done at once.
    pub auto_ack: bool,
}

/// A message handed to a group member.
#[derive(Debug, Clone)]
pub struct GroupDelivery {
    pub sequence: i64,
    /// 1 for the first delivery.
    pub attempt: i32,
    pub id: String,
    pub topic: String,
    pub data: Value,
    pub published_at: Ts,
}
