//! Events in the store: an emit stores the event, satisfies the waits it matches and creates
//! the runs it triggers in one transaction (idempotent on its key), with their history
//! entries; reads and pages of events.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::apply::{apply, lock_lane};
use super::db::{Db, SqlStore};
use super::runs::PageRequest;
use super::sql::{Conn, args, sql};
use super::writes::{escape_like, notify_commit};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::create::{RunSpec, create_run};
use crate::domain::lifecycle::waits::{WaitFacts, satisfied, satisfies};
use crate::domain::lifecycle::{Effects, LaneRef, StoredKind, Transition};
use crate::domain::run::RunStatus;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId, FunctionId, RunId};

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores an event and the runs it triggers in one transaction, or returns the first result
    /// for a repeated idempotency key.
    async fn record_event(
        &self,
        event: &NewEvent,
        runs: &[NewRun],
    ) -> Result<EventOutcome, StoreError>;

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

/// The waits `event` satisfies, resolved: each waiting step completes with the event and its
/// run is claimable again. The waiting runs' job rows are locked first, in run order.
async fn satisfy_waits<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    event: &Value,
    event_name: &str,
) -> Result<Vec<Transition>, StoreError> {
    let rows: Vec<WaitRow> = conn
        .fetch_all(sql!("waits_for_event"), args![env.as_str(), event_name])
        .await?;
    let waits: Vec<WaitFacts> = rows
        .into_iter()
        .map(|r| WaitFacts {
            run: RunId::from_stored(r.run_id),
            step_id: r.step_id,
            match_path: r.match_path,
            match_value: r.match_value.map(|v| v.0),
        })
        .filter(|w| satisfies(w, event))
        .collect();
    if waits.is_empty() {
        return Ok(Vec::new());
    }
    let runs: Value = waits.iter().map(|w| Value::from(w.run.as_str())).collect();
    conn.execute(sql!("lock_jobs_of_runs"), args![&runs])
        .await?;
    let mut transitions = Vec::new();
    for wait in waits {
        let removed = conn
            .execute(
                sql!("delete_wait"),
                args![wait.run.as_str(), wait.step_id.as_str()],
            )
            .await?;
        // Zero rows: resolved meanwhile (a timeout, a cancel, another event).
        if removed > 0 {
            transitions.push(satisfied(env, &wait, event));
        }
    }
    Ok(transitions)
}

#[async_trait]
impl<D: Db> EventStore for SqlStore<D> {
    async fn record_event(
        &self,
        event: &NewEvent,
        runs: &[NewRun],
    ) -> Result<EventOutcome, StoreError> {
        let mut tx = self.db.begin().await?;
        let inserted: Option<i64> = tx
            .scalar_optional(
                sql!("insert_event"),
                args![
                    event.id.as_str(),
                    event.env_id.as_str(),
                    event.name.as_str(),
                    &event.data,
                    &event.metadata,
                    event.source.as_str(),
                    event.idempotency_key.as_deref(),
                    event.version,
                    event.received_at,
                ],
            )
            .await?;
        let Some(seq) = inserted else {
            // The idempotency key exists: answer with the first emit's result.
            let first: String = tx
                .scalar(
                    sql!("find_event_by_idempotency_key"),
                    args![event.env_id.as_str(), event.idempotency_key.as_deref()],
                )
                .await?;
            let first = EventId::from_stored(first);
            let run_ids = select_event_run_ids(&mut *tx, &event.env_id, &first).await?;
            return Ok(EventOutcome::Duplicate {
                event_id: first,
                run_ids,
            });
        };
        let at = event.received_at;
        let mut received = Transition::default();
        received.history(NewHistoryEntry {
            env_id: event.env_id.clone(),
            kind: HistoryKind::EventReceived,
            run_id: None,
            function_id: None,
            event_id: Some(event.id.clone()),
            payload: serde_json::json!({
                "name": event.name,
                "source": event.source,
                "idempotency_key": event.idempotency_key,
                "run_count": runs.len(),
            }),
        });
        let wire_event = serde_json::json!({
            "id": event.id,
            "name": event.name,
            "data": event.data,
            "metadata": event.metadata,
            "source": event.source,
            "timestamp": event.received_at.to_rfc3339(),
        });
        let mut transitions = vec![received];
        // Existing job rows (the waits this event satisfies) are locked before any lane lock
        // is taken for the new runs: the lock order every transaction keeps.
        transitions.extend(satisfy_waits(&mut *tx, &event.env_id, &wire_event, &event.name).await?);
        for run in runs {
            let lane = run.lane.as_ref().filter(|l| l.limit > 0).map(|l| LaneRef {
                env: event.env_id.clone(),
                function_id: run.function_id.clone(),
                key: l.key.clone(),
                limit: l.limit,
            });
            let active = match &lane {
                Some(lane) => Some(lock_lane(&mut *tx, lane).await?),
                None => None,
            };
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
                lane,
            };
            transitions.push(create_run(&spec, active));
        }
        let mut effects = apply(&mut *tx, transitions, at).await?;
        effects.stored.push((StoredKind::Event, seq));
        notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
        D::commit(tx).await?;
        Ok(EventOutcome::Stored {
            event_id: event.id.clone(),
            run_ids: runs.iter().map(|r| r.id.clone()).collect(),
            effects,
        })
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
