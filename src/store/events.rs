//! Events in the store: an emit stores the event, satisfies the waits it matches and creates
//! the runs it triggers in one transaction (idempotent on its key), with their history
//! entries; reads and pages of events.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::apply::{apply, lock_lane};
use super::db::{Db, SqlStore};
use super::runs::PageRequest;
use super::schedules::{
    DebounceHit, Throttle, arm_debounce, lock_throttle_windows, save_throttle_windows,
};
use super::sql::{Conn, args, sql};
use super::writes::{escape_like, notify_commit};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::create::{RunSpec, create_run};
use crate::domain::lifecycle::waits::{WaitFacts, satisfied, satisfies};
use crate::domain::lifecycle::{Effects, LaneRef, StoredKind, Transition};
use crate::domain::run::RunStatus;
use crate::domain::stream::{
    AppendRefusal, AppendRequest, StreamHead, plan_appends, stream_lock_keys,
};
use crate::domain::time::Ts;
use crate::ids::{EntityId, EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores events and the runs they trigger in one transaction, in order (a group commit):
    /// each event's waits are satisfied and its runs created as if it had been stored alone.
    /// A repeated idempotency key (seen before, or earlier in the batch) answers with the first
    /// event's result and writes nothing.
    async fn record_events(&self, emissions: &[Emission]) -> Result<Vec<EventOutcome>, StoreError>;

    /// One event on its own.
    async fn record_event(
        &self,
        event: &NewEvent,
        runs: &[NewRun],
    ) -> Result<EventOutcome, StoreError> {
        let emission = Emission {
            event: event.clone(),
            runs: runs.to_vec(),
            debounces: Vec::new(),
        };
        self.record_events(std::slice::from_ref(&emission))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Internal("an event batch answered nothing".into()))
    }

    async fn get_event(&self, env: &EnvId, id: &EventId)
    -> Result<Option<EventRecord>, StoreError>;

    async fn list_events(
        &self,
        env: &EnvId,
        query: &EventQuery,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Counts per event name over the newest `scan_cap` matching events, and how many were
    /// scanned.
    async fn event_names(
        &self,
        env: &EnvId,
        query: &EventNameQuery,
    ) -> Result<(Vec<EventNameCount>, i64), StoreError>;

    async fn run_ids_for_event(
        &self,
        env: &EnvId,
        event: &EventId,
    ) -> Result<Vec<RunId>, StoreError>;

    /// An event by its sequence (any environment: a copy announced by another node).
    async fn event_by_seq(&self, seq: i64) -> Result<Option<EventRecord>, StoreError>;
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
    /// Set for an entity event: its stream and its version in it.
    pub entity: Option<EntityRef>,
    pub emitted_by_run: Option<RunId>,
    pub schema: SchemaStamp,
    /// The emit's W3C traceparent (stored only while OTLP tracing is on).
    pub traceparent: Option<String>,
}

/// The stream an entity event belongs to and its version there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef {
    pub entity_id: EntityId,
    pub entity_type: String,
    pub version: i64,
}

/// What schema enforcement recorded on an event: the hash of the schema it was checked against
/// (none: not checked) and, under `warn`, why it did not conform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaStamp {
    pub hash: Option<String>,
    pub error: Option<String>,
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
    /// An append to an entity stream: the store decides its version under the stream's lock.
    pub append: Option<AppendRequest>,
    /// For a tombstone: also remove the stream's events below it (`DeleteStream{purge}`).
    pub purge_below: bool,
    pub emitted_by_run: Option<RunId>,
    pub schema: SchemaStamp,
    /// The emit's W3C traceparent, when OTLP tracing is on.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: RunId,
    pub function_id: FunctionId,
    pub function_version: i32,
    pub status: RunStatus,
    pub max_attempts: i32,
    /// Set when the function has a concurrency limit or an actor key.
    pub lane: Option<Lane>,
    /// Set when the function has a throttle: the run's start comes from the key's window.
    pub throttle: Option<Throttle>,
}

/// An event to store, the runs it starts, and the debounces it re-arms instead.
#[derive(Debug, Clone)]
pub struct Emission {
    pub event: NewEvent,
    pub runs: Vec<NewRun>,
    pub debounces: Vec<DebounceHit>,
}

#[derive(Debug, Clone)]
pub enum EventOutcome {
    Stored {
        event_id: EventId,
        seq: i64,
        run_ids: Vec<RunId>,
        /// The version an append took in its stream.
        entity_version: Option<i64>,
        effects: Effects,
    },
    /// The idempotency key was seen before: the first emit's result, nothing new written.
    Duplicate {
        event_id: EventId,
        seq: i64,
        run_ids: Vec<RunId>,
        entity_version: Option<i64>,
    },
    /// An append its stream refused (a version conflict, a deleted stream): nothing written.
    Refused(AppendRefusal),
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
    pub entity_id: Option<String>,
    pub entity_type: Option<String>,
    pub entity_version: Option<i64>,
    pub emitted_by_run: Option<String>,
    pub schema_hash: Option<String>,
    pub schema_error: Option<String>,
    /// Selected only where a dispatch needs it; absent elsewhere.
    #[sqlx(default)]
    pub traceparent: Option<String>,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> Self {
        let entity = match (r.entity_id, r.entity_version) {
            (Some(id), Some(version)) => Some(EntityRef {
                entity_id: EntityId::from_stored(id),
                entity_type: r.entity_type.unwrap_or_default(),
                version,
            }),
            _ => None,
        };
        Self {
            entity,
            emitted_by_run: r.emitted_by_run.map(RunId::from_stored),
            traceparent: r.traceparent,
            schema: SchemaStamp {
                hash: r.schema_hash.filter(|h| !h.is_empty()),
                error: r.schema_error,
            },
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

#[derive(sqlx::FromRow)]
struct WaitRow {
    run_id: String,
    step_id: String,
    match_path: Option<String>,
    match_value: Option<Json<Value>>,
}

#[derive(sqlx::FromRow)]
struct NameCountRow {
    name: String,
    count: i64,
    scanned: i64,
}

pub(crate) async fn select_event_run_ids<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    event: &EventId,
) -> Result<Vec<RunId>, StoreError> {
    let ids: Vec<String> = conn
        .scalars(
            sql!("run_ids_for_event"),
            args![env.as_str(), event.as_str()],
        )
        .await?;
    Ok(ids.into_iter().map(RunId::from_stored).collect())
}

/// The waits of `env` that `event` satisfies (not yet locked or removed).
async fn waits_satisfied_by<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    event: &Value,
    event_name: &str,
) -> Result<Vec<WaitFacts>, StoreError> {
    let rows: Vec<WaitRow> = conn
        .fetch_all(sql!("waits_for_event"), args![env.as_str(), event_name])
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| WaitFacts {
            run: RunId::from_stored(r.run_id),
            step_id: r.step_id,
            match_path: r.match_path,
            match_value: r.match_value.map(|v| v.0),
        })
        .filter(|w| satisfies(w, event))
        .collect())
}

/// The event as a waiting step receives it.
fn wire_event(event: &NewEvent) -> Value {
    serde_json::json!({
        "id": event.id,
        "name": event.name,
        "data": event.data,
        "metadata": event.metadata,
        "source": event.source,
        "timestamp": event.received_at.to_rfc3339(),
    })
}

/// The `event.received` history entry (and `stream.deleted` for a tombstone).
fn received(event: &NewEvent, run_count: usize, entity_version: Option<i64>) -> Transition {
    let mut t = Transition::default();
    let mut payload = serde_json::json!({
        "name": event.name,
        "source": event.source,
        "idempotency_key": event.idempotency_key,
        "run_count": run_count,
    });
    if let Some(append) = &event.append {
        payload["entity_id"] = Value::from(append.entity_id.as_str());
        payload["entity_type"] = Value::from(append.entity_type.as_str());
        payload["entity_version"] = Value::from(entity_version);
    }
    if let Some(reason) = &event.schema.error {
        payload["schema_error"] = Value::from(reason.as_str());
    }
    t.history(NewHistoryEntry {
        env_id: event.env_id.clone(),
        kind: HistoryKind::EventReceived,
        run_id: None,
        function_id: None,
        event_id: Some(event.id.clone()),
        payload,
    });
    if let Some(append) = event.append.as_ref().filter(|a| a.tombstone) {
        t.history(NewHistoryEntry {
            env_id: event.env_id.clone(),
            kind: HistoryKind::StreamDeleted,
            run_id: None,
            function_id: None,
            event_id: Some(event.id.clone()),
            payload: serde_json::json!({
                "entity_id": append.entity_id,
                "entity_type": append.entity_type,
                "entity_version": entity_version,
                "purge": event.purge_below,
                "actor_id": event.metadata.get("actor_id"),
                "reason": event.metadata.get("reason"),
            }),
        });
    }
    t
}

fn lane_of(env: &EnvId, run: &NewRun) -> Option<LaneRef> {
    run.lane.as_ref().filter(|l| l.limit > 0).map(|l| LaneRef {
        env: env.clone(),
        function_id: run.function_id.clone(),
        key: l.key.clone(),
        limit: l.limit,
    })
}

fn lane_name(lane: &LaneRef) -> String {
    format!("{}/{}/{}", lane.env, lane.function_id, lane.key)
}

/// Whether a run creation admitted the run to its lane (rather than blocking it).
fn admitted(created: &Transition) -> bool {
    created.changes.iter().any(|c| {
        matches!(c, crate::domain::lifecycle::Change::InsertRun(r)
            if r.job_state == crate::domain::lifecycle::JobState::Queued)
    })
}

#[derive(sqlx::FromRow)]
struct StoredEventRow {
    id: String,
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct WaitedNameRow {
    env_id: String,
    event_name: String,
}

#[derive(sqlx::FromRow)]
struct FirstEventRow {
    id: String,
    seq: i64,
    entity_version: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StreamHeadRow {
    env_id: String,
    entity_id: String,
    entity_type: String,
    version: i64,
    deleted: bool,
}

#[derive(sqlx::FromRow)]
struct KnownKeyRow {
    env_id: String,
    idempotency_key: String,
}

/// A stream as the store names it: its environment and entity.
type StreamKey = (EnvId, EntityId);

/// The batch's appends decided under their streams' locks.
#[derive(Default)]
struct DecidedAppends {
    /// By emission index; absent for an ordinary event and for an append whose idempotency key
    /// was seen before (it answers with the first append).
    outcomes: HashMap<usize, Result<i64, AppendRefusal>>,
    /// By event id, the version each accepted append takes.
    versions: HashMap<String, i64>,
    heads: HashMap<StreamKey, (StreamHead, i64)>,
    /// Placeholder heads (version 0) this transaction created for streams that got no event.
    empty: Vec<StreamKey>,
}

impl DecidedAppends {
    fn version_of(&self, event: &NewEvent) -> Option<i64> {
        self.versions.get(event.id.as_str()).copied()
    }
}

/// Locks the head of every stream the batch appends to (in key order, the one lock order), and
/// decides each append in order ([`plan_appends`]). An append whose idempotency key is already
/// stored, or used earlier in the batch, is not decided: it answers with the first append.
async fn decide_appends<C: Conn + ?Sized>(
    conn: &mut C,
    emissions: &[Emission],
) -> Result<DecidedAppends, StoreError> {
    let appending: Vec<(usize, &NewEvent, &AppendRequest)> = emissions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.event.append.as_ref().map(|a| (i, &e.event, a)))
        .collect();
    if appending.is_empty() {
        return Ok(DecidedAppends::default());
    }
    let mut keys: Vec<StreamKey> = appending
        .iter()
        .map(|(_, e, a)| (e.env_id.clone(), a.entity_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let order: Value = stream_lock_keys(&keys)
        .into_iter()
        .map(Value::from)
        .collect();
    conn.execute(sql!("lock_stream_order"), args![&order])
        .await?;
    let at = appending[0].1.received_at;
    let lock_rows: Value = keys
        .iter()
        .map(|(env, entity)| {
            let entity_type = appending
                .iter()
                .find(|(_, e, a)| &e.env_id == env && &a.entity_id == entity)
                .map_or("", |(_, _, a)| a.entity_type.as_str());
            serde_json::json!({"env_id": env, "entity_id": entity, "entity_type": entity_type,
                               "at": at.to_rfc3339()})
        })
        .collect();
    let rows: Vec<StreamHeadRow> = conn
        .fetch_all(sql!("lock_stream_heads"), args![&lock_rows])
        .await?;
    let heads: HashMap<StreamKey, StreamHead> = rows
        .into_iter()
        .map(|r| {
            (
                (
                    EnvId::from_stored(r.env_id),
                    EntityId::from_stored(r.entity_id),
                ),
                StreamHead {
                    entity_type: r.entity_type,
                    version: r.version,
                    deleted: r.deleted,
                },
            )
        })
        .collect();

    // Keys stored before (read under the stream locks, so a concurrent first append of the same
    // key on the same stream is seen once it committed).
    let keyed: Value = appending
        .iter()
        .filter_map(|(_, e, _)| {
            e.idempotency_key
                .as_ref()
                .map(|k| serde_json::json!({"env_id": e.env_id, "key": k}))
        })
        .collect();
    let seen: HashSet<(String, String)> = if keyed.as_array().is_some_and(|a| !a.is_empty()) {
        let known: Vec<KnownKeyRow> = conn
            .fetch_all(sql!("known_idempotency_keys"), args![&keyed])
            .await?;
        known
            .into_iter()
            .map(|r| (r.env_id, r.idempotency_key))
            .collect()
    } else {
        HashSet::new()
    };
    let mut to_plan: Vec<(usize, &NewEvent, StreamKey, &AppendRequest)> = Vec::new();
    // A key repeated within the batch answers as its first use does (index of that use).
    let mut first_use: HashMap<(String, String), usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (i, event, append) in appending {
        if let Some(key) = &event.idempotency_key {
            let k = (event.env_id.to_string(), key.clone());
            if seen.contains(&k) {
                continue;
            }
            if let Some(first) = first_use.get(&k) {
                repeats.push((i, *first));
                continue;
            }
            first_use.insert(k, i);
        }
        to_plan.push((
            i,
            event,
            (event.env_id.clone(), append.entity_id.clone()),
            append,
        ));
    }
    let plan = plan_appends(
        &heads,
        &to_plan
            .iter()
            .map(|(_, _, k, a)| (k.clone(), *a))
            .collect::<Vec<_>>(),
    );
    let empty = keys
        .into_iter()
        .filter(|k| heads.get(k).is_some_and(|h| h.version == 0) && !plan.heads.contains_key(k))
        .collect();
    let mut decided = DecidedAppends {
        heads: plan.heads,
        empty,
        ..DecidedAppends::default()
    };
    for ((i, event, _, _), outcome) in to_plan.into_iter().zip(plan.outcomes) {
        if let Ok(v) = &outcome {
            decided.versions.insert(event.id.to_string(), *v);
        }
        decided.outcomes.insert(i, outcome);
    }
    // A repeat of a refused append is refused the same way (and not stored); a repeat of an
    // accepted one is a duplicate, answered after the insert.
    for (i, first) in repeats {
        if let Some(Err(refusal)) = decided.outcomes.get(&first) {
            let refusal = refusal.clone();
            decided.outcomes.insert(i, Err(refusal));
        }
    }
    Ok(decided)
}

/// Writes the new heads of the streams the batch appended to, drops the placeholder heads of
/// streams that got no event after all, and carries out tombstones (snapshots dropped; with
/// `purge`, the events below the tombstone removed).
async fn write_stream_heads<C: Conn + ?Sized>(
    conn: &mut C,
    emissions: &[Emission],
    appends: &DecidedAppends,
) -> Result<(), StoreError> {
    let at = emissions
        .first()
        .map_or_else(Ts::now, |e| e.event.received_at);
    if !appends.heads.is_empty() {
        let heads: Value = appends
            .heads
            .iter()
            .map(|((env, entity), (head, added))| {
                serde_json::json!({"env_id": env, "entity_id": entity,
                    "entity_type": head.entity_type, "version": head.version, "added": added,
                    "deleted": head.deleted, "at": at.to_rfc3339()})
            })
            .collect();
        conn.execute(sql!("update_stream_heads"), args![&heads])
            .await?;
    }
    if !appends.empty.is_empty() {
        let empty: Value = appends
            .empty
            .iter()
            .map(|(env, entity)| serde_json::json!({"env_id": env, "entity_id": entity}))
            .collect();
        conn.execute(sql!("drop_empty_stream_heads"), args![&empty])
            .await?;
    }
    for e in emissions {
        let event = &e.event;
        let Some(append) = event.append.as_ref().filter(|a| a.tombstone) else {
            continue;
        };
        let Some(version) = appends.version_of(event) else {
            continue;
        };
        conn.execute(
            sql!("delete_stream_snapshots"),
            args![
                event.env_id.as_str(),
                append.entity_id.as_str(),
                None::<i64>
            ],
        )
        .await?;
        if event.purge_below {
            conn.execute(
                sql!("purge_stream_events"),
                args![event.env_id.as_str(), append.entity_id.as_str(), version],
            )
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl<D: Db> EventStore for SqlStore<D> {
    async fn record_events(&self, emissions: &[Emission]) -> Result<Vec<EventOutcome>, StoreError> {
        let mut tx = self.db.begin().await?;
        let appends = decide_appends(&mut *tx, emissions).await?;
        let rows: Value = emissions
            .iter()
            .enumerate()
            .filter(|(i, _)| !matches!(appends.outcomes.get(i), Some(Err(_))))
            .map(|(i, e)| {
                let event = &e.event;
                let version = appends.outcomes.get(&i).and_then(|o| o.as_ref().ok());
                let append = event.append.as_ref();
                serde_json::json!({
                    "id": event.id, "env_id": event.env_id, "name": event.name,
                    "data": event.data.to_string(), "metadata": event.metadata.to_string(),
                    "source": event.source, "idempotency_key": event.idempotency_key,
                    "version": event.version, "received_at": event.received_at.to_rfc3339(),
                    "entity_id": append.map(|a| a.entity_id.as_str()),
                    "entity_type": append.map(|a| a.entity_type.as_str()),
                    "entity_version": version,
                    "emitted_by_run": event.emitted_by_run,
                    "schema_hash": event.schema.hash, "schema_error": event.schema.error,
                    "traceparent": event.traceparent,
                })
            })
            .collect();
        let stored: Vec<StoredEventRow> = tx.fetch_all(sql!("insert_events"), args![&rows]).await?;
        let seqs: HashMap<String, i64> = stored.into_iter().map(|r| (r.id, r.seq)).collect();
        write_stream_heads(&mut *tx, emissions, &appends).await?;

        // Which stored events some run waits for (usually none: one round trip to know).
        let stored_events: Vec<&Emission> = emissions
            .iter()
            .filter(|e| seqs.contains_key(e.event.id.as_str()))
            .collect();
        let names: Value = stored_events
            .iter()
            .map(|e| serde_json::json!({"env_id": e.event.env_id, "name": e.event.name}))
            .collect();
        let waited: HashSet<(String, String)> = if stored_events.is_empty() {
            HashSet::new()
        } else {
            let rows: Vec<WaitedNameRow> = tx
                .fetch_all(sql!("waited_event_names"), args![&names])
                .await?;
            rows.into_iter().map(|r| (r.env_id, r.event_name)).collect()
        };

        // Waits first, for the whole batch: every job row they touch is locked at once, in run
        // order, before any lane lock (the lock order every transaction keeps).
        let mut candidates: Vec<(&Emission, Value, Vec<WaitFacts>)> = Vec::new();
        for e in &stored_events {
            let key = (e.event.env_id.to_string(), e.event.name.clone());
            if !waited.contains(&key) {
                continue;
            }
            let wire = wire_event(&e.event);
            let waits = waits_satisfied_by(&mut *tx, &e.event.env_id, &wire, &e.event.name).await?;
            if !waits.is_empty() {
                candidates.push((e, wire, waits));
            }
        }
        let locked: Value = candidates
            .iter()
            .flat_map(|(_, _, waits)| waits.iter().map(|w| Value::from(w.run.as_str())))
            .collect();
        if !candidates.is_empty() {
            tx.execute(sql!("lock_jobs_of_runs"), args![&locked])
                .await?;
        }
        let mut resumed: HashMap<&str, Vec<Transition>> = HashMap::new();
        for (e, wire, waits) in &candidates {
            for wait in waits {
                let removed = tx
                    .execute(
                        sql!("delete_wait"),
                        args![wait.run.as_str(), wait.step_id.as_str()],
                    )
                    .await?;
                // Zero rows: resolved meanwhile (a timeout, a cancel, an earlier event).
                if removed > 0 {
                    resumed
                        .entry(e.event.id.as_str())
                        .or_default()
                        .push(satisfied(&e.event.env_id, wait, wire));
                }
            }
        }

        // Then the lanes of every new run, locked in name order, counted once; admissions
        // earlier in the batch count against the runs after them.
        let mut lanes: BTreeMap<String, (LaneRef, i64)> = BTreeMap::new();
        for e in &stored_events {
            for run in &e.runs {
                if let Some(lane) = lane_of(&e.event.env_id, run) {
                    lanes.entry(lane_name(&lane)).or_insert((lane, 0));
                }
            }
        }
        for (lane, active) in lanes.values_mut() {
            *active = lock_lane(&mut *tx, lane).await?;
        }
        // Then the throttle windows of the batch's throttled runs, in key order.
        let mut throttled: Vec<(String, String, String)> = Vec::new();
        for e in &stored_events {
            for r in &e.runs {
                if let Some(t) = &r.throttle {
                    throttled.push((
                        e.event.env_id.to_string(),
                        r.function_id.to_string(),
                        t.key.clone(),
                    ));
                }
            }
        }
        let mut windows = lock_throttle_windows(&mut *tx, throttled).await?;

        let at = emissions
            .first()
            .map_or_else(Ts::now, |e| e.event.received_at);
        let mut transitions = Vec::new();
        let mut per_event: HashMap<&str, Effects> = HashMap::new();
        for e in &stored_events {
            let event = &e.event;
            let mut mine = vec![received(event, e.runs.len(), appends.version_of(event))];
            mine.extend(resumed.remove(event.id.as_str()).unwrap_or_default());
            for run in &e.runs {
                let lane = lane_of(&event.env_id, run);
                let active = lane
                    .as_ref()
                    .and_then(|l| lanes.get(&lane_name(l)))
                    .map(|(_, n)| *n);
                let spec = RunSpec {
                    id: run.id.clone(),
                    env: event.env_id.clone(),
                    function_id: run.function_id.clone(),
                    function_version: run.function_version,
                    event_id: Some(event.id.clone()),
                    event_name: event.name.clone(),
                    input: event.data.clone(),
                    max_attempts: run.max_attempts,
                    parent: None,
                    parent_step: None,
                    lane: lane.clone(),
                    not_before: run.throttle.as_ref().and_then(|t| {
                        let key = (
                            event.env_id.to_string(),
                            run.function_id.to_string(),
                            t.key.clone(),
                        );
                        let window = windows.get_mut(&key)?;
                        let admission = crate::domain::throttle::admit(window, at.millis(), &t.def);
                        *window = admission.window.clone();
                        admission.delayed_start(at)
                    }),
                };
                let created = create_run(&spec, active);
                if let Some(l) = &lane
                    && admitted(&created)
                    && let Some((_, n)) = lanes.get_mut(&lane_name(l))
                {
                    *n += 1;
                }
                mine.push(created);
            }
            let effects = per_event.entry(event.id.as_str()).or_default();
            for t in &mine {
                effects.merge(t.effects_with_schedule());
            }
            if let Some(seq) = seqs.get(event.id.as_str()) {
                effects.stored.push((StoredKind::Event, *seq));
            }
            transitions.extend(mine);
        }
        let mut effects = apply(&mut *tx, transitions, at).await?;
        save_throttle_windows(&mut *tx, &windows).await?;
        // Debounces last, each under its entry's lock, in key order.
        let mut hits: Vec<(&EnvId, &EventId, &DebounceHit)> = stored_events
            .iter()
            .flat_map(|e| {
                e.debounces
                    .iter()
                    .map(|h| (&e.event.env_id, &e.event.id, h))
            })
            .collect();
        hits.sort_by(|a, b| {
            (a.0, &a.2.function_id, &a.2.key).cmp(&(b.0, &b.2.function_id, &b.2.key))
        });
        for (env, event, hit) in hits {
            arm_debounce(&mut *tx, env, event, hit, at).await?;
        }
        for seq in seqs.values() {
            effects.stored.push((StoredKind::Event, *seq));
        }
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;

        // Repeated keys answer with the first event's result (read in this transaction, so an
        // earlier event of this batch counts).
        let mut outcomes = Vec::with_capacity(emissions.len());
        for (i, e) in emissions.iter().enumerate() {
            let event = &e.event;
            if let Some(Err(refusal)) = appends.outcomes.get(&i) {
                outcomes.push(EventOutcome::Refused(refusal.clone()));
                continue;
            }
            if let Some(seq) = seqs.get(event.id.as_str()) {
                outcomes.push(EventOutcome::Stored {
                    event_id: event.id.clone(),
                    seq: *seq,
                    run_ids: e.runs.iter().map(|r| r.id.clone()).collect(),
                    entity_version: appends.version_of(event),
                    effects: per_event.remove(event.id.as_str()).unwrap_or_default(),
                });
                continue;
            }
            let first: FirstEventRow = tx
                .fetch_one(
                    sql!("find_event_by_idempotency_key"),
                    args![event.env_id.as_str(), event.idempotency_key.as_deref()],
                )
                .await?;
            let first_id = EventId::from_stored(first.id);
            let run_ids = select_event_run_ids(&mut *tx, &event.env_id, &first_id).await?;
            outcomes.push(EventOutcome::Duplicate {
                event_id: first_id,
                seq: first.seq,
                run_ids,
                entity_version: first.entity_version,
            });
        }
        D::commit(tx).await?;
        // Work made claimable by a follow-up rides on the first stored event's answer.
        if effects.work_ready
            && let Some(EventOutcome::Stored { effects: first, .. }) = outcomes
                .iter_mut()
                .find(|o| matches!(o, EventOutcome::Stored { .. }))
        {
            first.work_ready = true;
        }
        Ok(outcomes)
    }

    async fn get_event(
        &self,
        env: &EnvId,
        id: &EventId,
    ) -> Result<Option<EventRecord>, StoreError> {
        let row: Option<EventRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_event"), args![env.as_str(), id.as_str()])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn list_events(
        &self,
        env: &EnvId,
        q: &EventQuery,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let names: Option<Value> = q.names.as_ref().map(|n| Value::from(n.clone()));
        let search = q.search.as_ref().map(|s| format!("%{}%", escape_like(s)));
        let rows: Vec<EventRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_events"),
                args![
                    env.as_str(),
                    q.page.before_seq,
                    q.name.as_deref(),
                    names.as_ref(),
                    q.source.as_deref(),
                    q.since,
                    q.until,
                    search.as_deref(),
                    q.page.limit,
                ],
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn event_names(
        &self,
        env: &EnvId,
        q: &EventNameQuery,
    ) -> Result<(Vec<EventNameCount>, i64), StoreError> {
        let rows: Vec<NameCountRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("event_names"),
                args![
                    env.as_str(),
                    q.source.as_deref(),
                    q.since,
                    q.until,
                    q.scan_cap
                ],
            )
            .await?;
        let scanned = rows.first().map_or(0, |r| r.scanned);
        let names = rows
            .into_iter()
            .map(|r| EventNameCount {
                name: r.name,
                count: r.count,
            })
            .collect();
        Ok((names, scanned))
    }

    async fn run_ids_for_event(
        &self,
        env: &EnvId,
        event: &EventId,
    ) -> Result<Vec<RunId>, StoreError> {
        select_event_run_ids(&mut *self.db.reader().await?, env, event).await
    }

    async fn event_by_seq(&self, seq: i64) -> Result<Option<EventRecord>, StoreError> {
        let row: Option<EventRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("event_by_seq"), args![seq])
            .await?;
        Ok(row.map(Into::into))
    }
}
