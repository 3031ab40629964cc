//! Projections in the store: definitions and their archived revisions, cursors, runner leases,
//! per-partition state of managed projections, and the reads that feed them (events after a
//! cursor, only as far as no open transaction can still add one; invariant 35).

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::types::Json;

use super::StoreError;
use super::apply::write_history;
use super::db::{Db, SqlStore};
use super::events::{EventRecord, EventRow};
use super::sql::{Conn, args, sql};
use super::writes::escape_like;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::control::Actor;
use crate::domain::projection::{
    Definition, HeldLease, LeaseRefusal, PresentedLease, ProjectionKind, ProjectionStatus,
    Registration, RunnerRefusal, StreamOpening, check_lease, decide_acquire, decide_redelivery,
    decide_registration,
};
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// Creates or updates a definition (archiving the one it replaces) and says which it did.
    async fn register_projection(
        &self,
        env: &EnvId,
        name: &str,
        definition: &Definition,
        change: &Change,
    ) -> Result<Registered, StoreError>;

    async fn get_projection(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<Option<ProjectionRecord>, StoreError>;

    async fn list_projections(
        &self,
        env: &EnvId,
        query: &ProjectionQuery,
    ) -> Result<(Vec<ProjectionRecord>, i64), StoreError>;

    /// Removes a projection and its states (and runs `drop_tables`, a SQL projection's); false
    /// when there was none.
    async fn delete_projection(
        &self,
        env: &EnvId,
        name: &str,
        change: &Change,
        drop_tables: &[String],
    ) -> Result<bool, StoreError>;

    /// A runner-applied projection starts again from `cursor_seq` in a fresh state generation,
    /// its lease fenced, with `job` as its rebuild.
    async fn restart_projection(
        &self,
        env: &EnvId,
        name: &str,
        cursor_seq: i64,
        job: &Value,
    ) -> Result<(), StoreError>;

    /// Grants the runner lease when it is free or expired (`None`: another runner holds it).
    async fn acquire_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        ttl: std::time::Duration,
        token: String,
    ) -> Result<Result<Option<HeldLease>, RunnerRefusal>, StoreError>;

    /// Extends the presented lease, if it is still the current one.
    async fn renew_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
        ttl: std::time::Duration,
    ) -> Result<Result<HeldLease, RunnerRefusal>, StoreError>;

    /// Frees the presented lease (a stale one changes nothing).
    async fn release_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
    ) -> Result<(), StoreError>;

    /// A runner opens a stream (or polls afresh) under its lease: counts a redelivery when the
    /// last stream delivered past a cursor that did not move, and stops the projection with an
    /// error after too many. Returns the projection as it now stands.
    async fn open_projection_stream(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
    ) -> Result<Result<ProjectionRecord, RunnerRefusal>, StoreError>;

    /// Checks the lease without changing anything (each delivered batch).
    async fn check_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
    ) -> Result<Result<ProjectionRecord, RunnerRefusal>, StoreError>;

    /// How far the open stream has delivered.
    async fn note_projection_delivered(
        &self,
        env: &EnvId,
        name: &str,
        seq: i64,
    ) -> Result<(), StoreError>;

    /// Saves a managed partition's state and moves the cursor, under the lease, atomically.
    async fn save_projection_state(
        &self,
        save: &StateSave,
    ) -> Result<Result<(), RunnerRefusal>, StoreError>;

    /// Moves an external projection's cursor, under the lease.
    async fn ack_projection_events(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
        position: &Position,
    ) -> Result<Result<(), RunnerRefusal>, StoreError>;

    /// A partition's saved state in the generation readers see.
    async fn projection_state(
        &self,
        env: &EnvId,
        name: &str,
        generation: i64,
        partition: &str,
    ) -> Result<Option<PartitionState>, StoreError>;

    async fn projection_partitions(
        &self,
        env: &EnvId,
        name: &str,
        generation: i64,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;

    async fn set_projection_status(
        &self,
        env: &EnvId,
        name: &str,
        status: ProjectionStatus,
        error: &str,
        change: &Change,
    ) -> Result<bool, StoreError>;

    /// The next events a projection follows after `after_seq`, only below the safe frontier.
    async fn projection_events(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Events a projection follows after `after_seq` (up to `up_to` when given).
    async fn pending_projection_events(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
        up_to: Option<i64>,
    ) -> Result<i64, StoreError>;

    /// When the first event after the cursor arrived (the lag in time).
    async fn oldest_pending_projection_event(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
    ) -> Result<Option<Ts>, StoreError>;

    /// Committed events the projection may not pass yet, and the open transaction in the way.
    async fn projection_holdback(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
    ) -> Result<Holdback, StoreError>;

    async fn projection_revisions(
        &self,
        env: &EnvId,
        name: &str,
        before_revision: i64,
        limit: i64,
    ) -> Result<Vec<RevisionRecord>, StoreError>;

    async fn projection_revision(
        &self,
        env: &EnvId,
        name: &str,
        revision: i64,
    ) -> Result<Option<RevisionRecord>, StoreError>;

    async fn event_seq(&self, env: &EnvId, event_id: &str) -> Result<Option<i64>, StoreError>;
}

/// Who changed a projection and why (the revisions and the history say so).
#[derive(Debug, Clone)]
pub struct Change {
    pub actor: Actor,
    pub change_reason: String,
    pub event_id: String,
}

impl Change {
    /// A change by `actor`, for the reason the actor gave, under a fresh history event id.
    pub fn by(actor: Actor) -> Self {
        Self {
            change_reason: actor.reason.clone(),
            actor,
            event_id: crate::ids::EventId::generate().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub registration: Registration,
    pub record: ProjectionRecord,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectionQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct ProjectionRecord {
    pub env_id: EnvId,
    pub name: String,
    pub definition: Definition,
    pub revision: i64,
    pub status: ProjectionStatus,
    pub error_message: String,
    pub cursor_seq: i64,
    pub cursor_event_id: Option<String>,
    pub cursor_event_at: Option<Ts>,
    pub lease: Option<HeldLease>,
    pub lease_epoch: i64,
    pub generation: i64,
    /// The running or last rebuild job, as recorded (JSON).
    pub rebuild: Option<Value>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// The last event folded or acknowledged.
#[derive(Debug, Clone)]
pub struct Position {
    pub seq: i64,
    pub event_id: String,
    pub at: Option<Ts>,
}

#[derive(Debug, Clone)]
pub struct StateSave {
    pub env_id: EnvId,
    pub name: String,
    pub lease: Option<PresentedLease>,
    /// The stored key (`""` already turned into the global partition).
    pub partition: String,
    pub state: Value,
    pub position: Position,
}

#[derive(Debug, Clone)]
pub struct PartitionState {
    pub partition: String,
    pub state: Value,
    pub last_event_seq: i64,
    pub last_event_id: String,
    pub last_event_at: Option<Ts>,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, Default)]
pub struct Holdback {
    /// Committed events past the frontier.
    pub held: i64,
    /// The backend whose open transaction holds the frontier, when it can be seen.
    pub pid: Option<i32>,
    pub since: Option<Ts>,
}

#[derive(Debug, Clone)]
pub struct RevisionRecord {
    pub revision: i64,
    pub previous: Option<Definition>,
    pub change_type: String,
    pub change_reason: String,
    pub actor_id: String,
    pub event_id: String,
    pub recorded_at: Ts,
}

#[derive(sqlx::FromRow)]
pub(super) struct ProjectionRow {
    env_id: String,
    name: String,
    #[allow(dead_code)]
    kind: String,
    definition: String,
    revision: i64,
    status: String,
    error_message: String,
    cursor_seq: i64,
    cursor_event_id: Option<String>,
    cursor_event_at: Option<Ts>,
    redeliveries: i32,
    delivered_seq: i64,
    lease_token: Option<String>,
    lease_epoch: i64,
    lease_expires_at: Option<Ts>,
    generation: i64,
    rebuild: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl ProjectionRow {
    pub(super) fn into_record(self) -> Result<ProjectionRecord, StoreError> {
        let definition: Definition = serde_json::from_str(&self.definition).map_err(|e| {
            StoreError::Internal(format!("projection {} definition: {e}", self.name))
        })?;
        let lease = self.held();
        Ok(ProjectionRecord {
            env_id: EnvId::from_stored(self.env_id),
            name: self.name,
            definition,
            revision: self.revision,
            status: ProjectionStatus::from_stored(&self.status),
            error_message: self.error_message,
            cursor_seq: self.cursor_seq,
            cursor_event_id: self.cursor_event_id,
            cursor_event_at: self.cursor_event_at,
            lease,
            lease_epoch: self.lease_epoch,
            generation: self.generation,
            rebuild: self
                .rebuild
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    fn opening(&self) -> StreamOpening {
        StreamOpening {
            cursor_seq: self.cursor_seq,
            delivered_seq: self.delivered_seq,
            redeliveries: self.redeliveries,
        }
    }

    fn held(&self) -> Option<HeldLease> {
        match (&self.lease_token, self.lease_expires_at) {
            (Some(token), Some(expires_at)) => Some(HeldLease {
                token: token.clone(),
                epoch: self.lease_epoch,
                expires_at,
            }),
            _ => None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ProjectionPageRow {
    #[sqlx(flatten)]
    projection: ProjectionRow,
    total: i64,
}

#[derive(sqlx::FromRow)]
struct PartitionStateRow {
    partition_key: String,
    state: Json<Value>,
    last_event_seq: i64,
    last_event_id: String,
    last_event_at: Option<Ts>,
    updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct HoldbackRow {
    held: i64,
    pid: Option<i32>,
    since: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct RevisionRow {
    revision: i64,
    definition: Option<String>,
    change_type: String,
    change_reason: String,
    actor_id: String,
    event_id: String,
    recorded_at: Ts,
}

impl From<RevisionRow> for RevisionRecord {
    fn from(r: RevisionRow) -> Self {
        Self {
            revision: r.revision,
            previous: r
                .definition
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
            change_type: r.change_type,
            change_reason: r.change_reason,
            actor_id: r.actor_id,
            event_id: r.event_id,
            recorded_at: r.recorded_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OldestRow {
    #[allow(dead_code)]
    seq: i64,
    received_at: Ts,
}

fn definition_text(definition: &Definition) -> Result<String, StoreError> {
    serde_json::to_string(definition)
        .map_err(|e| StoreError::Internal(format!("projection definition: {e}")))
}

fn events_json(events: &[String]) -> Value {
    Value::from(events.to_vec())
}

fn history_entry(env: &EnvId, kind: HistoryKind, name: &str, payload: Value) -> NewHistoryEntry {
    let mut payload = payload;
    if let Some(map) = payload.as_object_mut() {
        map.insert("projection".into(), Value::from(name));
    }
    NewHistoryEntry {
        env_id: env.clone(),
        kind,
        run_id: None,
        function_id: None,
        event_id: None,
        payload,
    }
}

/// Archives a definition change and returns its revision number.
pub(super) async fn archive_change<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    name: &str,
    previous: Option<&Definition>,
    change_type: &str,
    change: &Change,
    now: Ts,
) -> Result<i64, StoreError> {
    let revision: i64 = conn
        .scalar(sql!("next_projection_revision"), args![env.as_str(), name])
        .await?;
    let previous = previous.map(definition_text).transpose()?;
    conn.execute(
        sql!("insert_projection_revision"),
        args![
            env.as_str(),
            name,
            revision,
            previous.as_deref(),
            change_type,
            change.change_reason.as_str(),
            change.actor.key_id.as_str(),
            change.event_id.as_str(),
            now
        ],
    )
    .await?;
    Ok(revision)
}

/// Locks the projection row and checks the presented lease against it.
async fn locked_under_lease<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    name: &str,
    lease: Option<&PresentedLease>,
) -> Result<Result<ProjectionRow, RunnerRefusal>, StoreError> {
    let row: Option<ProjectionRow> = conn
        .fetch_optional(sql!("lock_projection"), args![env.as_str(), name])
        .await?;
    let Some(row) = row else {
        return Ok(Err(RunnerRefusal::Missing(name.to_owned())));
    };
    if ProjectionKind::from_stored(&row.kind) == ProjectionKind::Sql {
        return Ok(Err(LeaseRefusal::NotRunnerApplied.into()));
    }
    Ok(check_lease(row.held().as_ref(), row.lease_epoch, lease)
        .map(|()| row)
        .map_err(RunnerRefusal::from))
}

/// Moves the cursor and tells the other nodes' catch-up waiters.
async fn advance<C: Conn + ?Sized>(
    conn: &mut C,
    node: &str,
    env: &EnvId,
    name: &str,
    position: &Position,
    now: Ts,
) -> Result<(), StoreError> {
    conn.execute(
        sql!("advance_projection_cursor"),
        args![
            env.as_str(),
            name,
            position.seq,
            position.event_id.as_str(),
            position.at,
            now
        ],
    )
    .await?;
    let payload = super::projection_notify_payload(node);
    conn.execute(sql!("notify_commit"), args![payload.as_str()])
        .await?;
    Ok(())
}

#[async_trait]
impl<D: Db> ProjectionStore for SqlStore<D> {
    async fn register_projection(
        &self,
        env: &EnvId,
        name: &str,
        definition: &Definition,
        change: &Change,
    ) -> Result<Registered, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let current: Option<ProjectionRow> = tx
            .fetch_optional(sql!("lock_projection"), args![env.as_str(), name])
            .await?;
        let current = current.map(ProjectionRow::into_record).transpose()?;
        let registration = decide_registration(
            current.as_ref().map(|c| (&c.definition, c.revision)),
            definition,
        );
        let text = definition_text(definition)?;
        match &registration {
            Registration::Created => {
                let revision =
                    archive_change(&mut *tx, env, name, None, "registered", change, now).await?;
                tx.execute(
                    sql!("insert_projection"),
                    args![
                        env.as_str(),
                        name,
                        definition.kind.as_str(),
                        text.as_str(),
                        revision,
                        now
                    ],
                )
                .await?;
            }
            Registration::Updated { .. } => {
                let previous = current.as_ref().map(|c| &c.definition);
                let revision =
                    archive_change(&mut *tx, env, name, previous, "updated", change, now).await?;
                tx.execute(
                    sql!("update_projection_definition"),
                    args![env.as_str(), name, text.as_str(), revision, now],
                )
                .await?;
            }
            Registration::Unchanged | Registration::Conflict(_) => {}
        }
        if matches!(
            registration,
            Registration::Created | Registration::Updated { .. }
        ) {
            let kind = if matches!(registration, Registration::Created) {
                "registered"
            } else {
                "updated"
            };
            let entry = history_entry(
                env,
                HistoryKind::ProjectionChanged,
                name,
                json!({"change_type": kind, "kind": definition.kind.as_str(),
                       "events": definition.events, "change_reason": change.change_reason,
                       "actor_id": change.actor.key_id}),
            );
            write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        }
        let row: ProjectionRow = tx
            .fetch_optional(sql!("get_projection"), args![env.as_str(), name])
            .await?
            .ok_or_else(|| StoreError::Internal(format!("projection '{name}' vanished")))?;
        D::commit(tx).await?;
        Ok(Registered {
            registration,
            record: row.into_record()?,
        })
    }

    async fn get_projection(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<Option<ProjectionRecord>, StoreError> {
        let row: Option<ProjectionRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_projection"), args![env.as_str(), name])
            .await?;
        row.map(ProjectionRow::into_record).transpose()
    }

    async fn list_projections(
        &self,
        env: &EnvId,
        query: &ProjectionQuery,
    ) -> Result<(Vec<ProjectionRecord>, i64), StoreError> {
        let mut reader = self.db.reader().await?;
        let (status, kind) = (query.status.as_deref(), query.kind.as_deref());
        let rows: Vec<ProjectionPageRow> = reader
            .fetch_all(
                sql!("list_projections"),
                args![env.as_str(), status, kind, query.limit, query.offset],
            )
            .await?;
        let total = match rows.first() {
            Some(r) => r.total,
            None => {
                reader
                    .scalar(sql!("count_projections"), args![env.as_str(), status, kind])
                    .await?
            }
        };
        let records = rows
            .into_iter()
            .map(|r| r.projection.into_record())
            .collect::<Result<_, _>>()?;
        Ok((records, total))
    }

    async fn delete_projection(
        &self,
        env: &EnvId,
        name: &str,
        change: &Change,
        drop_tables: &[String],
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let current: Option<ProjectionRow> = tx
            .fetch_optional(sql!("lock_projection"), args![env.as_str(), name])
            .await?;
        let Some(current) = current.map(ProjectionRow::into_record).transpose()? else {
            return Ok(false);
        };
        archive_change(
            &mut *tx,
            env,
            name,
            Some(&current.definition),
            "deleted",
            change,
            now,
        )
        .await?;
        tx.execute(sql!("delete_projection_states"), args![env.as_str(), name])
            .await?;
        tx.execute(sql!("delete_projection"), args![env.as_str(), name])
            .await?;
        for statement in drop_tables {
            tx.execute_composed(statement, Vec::new())
                .await
                .map_err(StoreError::from)?;
        }
        let entry = history_entry(
            env,
            HistoryKind::ProjectionChanged,
            name,
            json!({"change_type": "deleted", "cursor_seq": current.cursor_seq,
                   "change_reason": change.change_reason, "actor_id": change.actor.key_id}),
        );
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(true)
    }

    async fn restart_projection(
        &self,
        env: &EnvId,
        name: &str,
        cursor_seq: i64,
        job: &Value,
    ) -> Result<(), StoreError> {
        let now = Ts::now();
        let text = job.to_string();
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("restart_projection"),
            args![env.as_str(), name, cursor_seq, text.as_str(), now],
        )
        .await?;
        tx.execute(
            sql!("delete_old_projection_states"),
            args![env.as_str(), name],
        )
        .await?;
        let entry = history_entry(
            env,
            HistoryKind::ProjectionChanged,
            name,
            json!({"change_type": "rebuild", "cursor_seq": cursor_seq, "job": job}),
        );
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(())
    }

    async fn acquire_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        ttl: std::time::Duration,
        token: String,
    ) -> Result<Result<Option<HeldLease>, RunnerRefusal>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let row: Option<ProjectionRow> = tx
            .fetch_optional(sql!("lock_projection"), args![env.as_str(), name])
            .await?;
        let Some(row) = row else {
            return Ok(Err(RunnerRefusal::Missing(name.to_owned())));
        };
        if ProjectionKind::from_stored(&row.kind) == ProjectionKind::Sql {
            return Ok(Err(LeaseRefusal::NotRunnerApplied.into()));
        }
        let Some(lease) = decide_acquire(row.held().as_ref(), row.lease_epoch, now, ttl, token)
        else {
            return Ok(Ok(None));
        };
        tx.execute(
            sql!("set_projection_lease"),
            args![
                env.as_str(),
                name,
                lease.token.as_str(),
                lease.epoch,
                lease.expires_at,
                now
            ],
        )
        .await?;
        D::commit(tx).await?;
        Ok(Ok(Some(lease)))
    }

    async fn renew_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
        ttl: std::time::Duration,
    ) -> Result<Result<HeldLease, RunnerRefusal>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        if let Err(refusal) = locked_under_lease(&mut *tx, env, name, Some(lease)).await? {
            return Ok(Err(refusal));
        }
        let renewed = HeldLease {
            token: lease.token.clone(),
            epoch: lease.epoch,
            expires_at: now.plus(ttl),
        };
        tx.execute(
            sql!("set_projection_lease"),
            args![
                env.as_str(),
                name,
                renewed.token.as_str(),
                renewed.epoch,
                renewed.expires_at,
                now
            ],
        )
        .await?;
        D::commit(tx).await?;
        Ok(Ok(renewed))
    }

    async fn release_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
    ) -> Result<(), StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        if locked_under_lease(&mut *tx, env, name, Some(lease))
            .await?
            .is_ok()
        {
            tx.execute(
                sql!("set_projection_lease"),
                args![
                    env.as_str(),
                    name,
                    None::<&str>,
                    lease.epoch,
                    None::<Ts>,
                    now
                ],
            )
            .await?;
            D::commit(tx).await?;
        }
        Ok(())
    }

    async fn open_projection_stream(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
    ) -> Result<Result<ProjectionRecord, RunnerRefusal>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let row = match locked_under_lease(&mut *tx, env, name, lease).await? {
            Ok(row) => row,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let (redeliveries, stop) = decide_redelivery(row.opening());
        let status = ProjectionStatus::from_stored(&row.status);
        let (status, error) = if stop && status == ProjectionStatus::Active {
            let error = format!(
                "the runner has not got past the event after seq {} in {redeliveries} deliveries: its handler keeps failing (resume the projection once it is fixed)",
                row.cursor_seq
            );
            let entry = history_entry(
                env,
                HistoryKind::ProjectionFailed,
                name,
                json!({"error": error, "cursor_seq": row.cursor_seq,
                       "redeliveries": redeliveries}),
            );
            write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
            (ProjectionStatus::Error, error)
        } else {
            (status, row.error_message.clone())
        };
        tx.execute(
            sql!("open_projection_stream"),
            args![
                env.as_str(),
                name,
                redeliveries,
                status.as_str(),
                error.as_str(),
                now
            ],
        )
        .await?;
        let row: ProjectionRow = tx
            .fetch_optional(sql!("get_projection"), args![env.as_str(), name])
            .await?
            .ok_or_else(|| StoreError::Internal(format!("projection '{name}' vanished")))?;
        D::commit(tx).await?;
        Ok(Ok(row.into_record()?))
    }

    async fn check_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
    ) -> Result<Result<ProjectionRecord, RunnerRefusal>, StoreError> {
        let row: Option<ProjectionRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("get_projection"), args![env.as_str(), name])
            .await?;
        let Some(row) = row else {
            return Ok(Err(RunnerRefusal::Missing(name.to_owned())));
        };
        if ProjectionKind::from_stored(&row.kind) == ProjectionKind::Sql {
            return Ok(Err(LeaseRefusal::NotRunnerApplied.into()));
        }
        match check_lease(row.held().as_ref(), row.lease_epoch, lease) {
            Ok(()) => Ok(Ok(row.into_record()?)),
            Err(refusal) => Ok(Err(refusal.into())),
        }
    }

    async fn note_projection_delivered(
        &self,
        env: &EnvId,
        name: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        self.db
            .writer()
            .await?
            .execute(
                sql!("note_projection_delivered"),
                args![env.as_str(), name, seq],
            )
            .await?;
        Ok(())
    }

    async fn save_projection_state(
        &self,
        save: &StateSave,
    ) -> Result<Result<(), RunnerRefusal>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let row = match locked_under_lease(&mut *tx, &save.env_id, &save.name, save.lease.as_ref())
            .await?
        {
            Ok(row) => row,
            Err(refusal) => return Ok(Err(refusal)),
        };
        tx.execute(
            sql!("upsert_projection_state"),
            args![
                save.env_id.as_str(),
                save.name.as_str(),
                row.generation,
                save.partition.as_str(),
                &save.state,
                save.position.seq,
                save.position.event_id.as_str(),
                save.position.at,
                now
            ],
        )
        .await?;
        advance(
            &mut *tx,
            self.db.node_id(),
            &save.env_id,
            &save.name,
            &save.position,
            now,
        )
        .await?;
        D::commit(tx).await?;
        Ok(Ok(()))
    }

    async fn ack_projection_events(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<&PresentedLease>,
        position: &Position,
    ) -> Result<Result<(), RunnerRefusal>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        if let Err(refusal) = locked_under_lease(&mut *tx, env, name, lease).await? {
            return Ok(Err(refusal));
        }
        advance(&mut *tx, self.db.node_id(), env, name, position, now).await?;
        D::commit(tx).await?;
        Ok(Ok(()))
    }

    async fn projection_state(
        &self,
        env: &EnvId,
        name: &str,
        generation: i64,
        partition: &str,
    ) -> Result<Option<PartitionState>, StoreError> {
        let row: Option<PartitionStateRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("get_projection_state"),
                args![env.as_str(), name, generation, partition],
            )
            .await?;
        Ok(row.map(|r| PartitionState {
            partition: r.partition_key,
            state: r.state.0,
            last_event_seq: r.last_event_seq,
            last_event_id: r.last_event_id,
            last_event_at: r.last_event_at,
            updated_at: r.updated_at,
        }))
    }

    async fn projection_partitions(
        &self,
        env: &EnvId,
        name: &str,
        generation: i64,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let pattern = search.map(|s| format!("%{}%", escape_like(s)));
        self.db
            .reader()
            .await?
            .scalars(
                sql!("list_projection_partitions"),
                args![env.as_str(), name, generation, pattern.as_deref(), limit],
            )
            .await
    }

    async fn set_projection_status(
        &self,
        env: &EnvId,
        name: &str,
        status: ProjectionStatus,
        error: &str,
        change: &Change,
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let current: Option<ProjectionRow> = tx
            .fetch_optional(sql!("lock_projection"), args![env.as_str(), name])
            .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        tx.execute(
            sql!("set_projection_status"),
            args![env.as_str(), name, status.as_str(), error, now],
        )
        .await?;
        let entry = history_entry(
            env,
            HistoryKind::ProjectionChanged,
            name,
            json!({"change_type": status.as_str(), "previous_status": current.status,
                   "cursor_seq": current.cursor_seq, "change_reason": change.change_reason,
                   "actor_id": change.actor.key_id}),
        );
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(true)
    }

    async fn projection_events(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let names = events_json(events);
        let rows: Vec<EventRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("projection_events"),
                args![env.as_str(), &names, after_seq, limit],
            )
            .await?;
        Ok(rows.into_iter().map(EventRecord::from).collect())
    }

    async fn pending_projection_events(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
        up_to: Option<i64>,
    ) -> Result<i64, StoreError> {
        let names = events_json(events);
        self.db
            .reader()
            .await?
            .scalar(
                sql!("count_pending_projection_events"),
                args![env.as_str(), &names, after_seq, up_to],
            )
            .await
    }

    async fn oldest_pending_projection_event(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
    ) -> Result<Option<Ts>, StoreError> {
        let names = events_json(events);
        let row: Option<OldestRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("oldest_pending_projection_event"),
                args![env.as_str(), &names, after_seq],
            )
            .await?;
        Ok(row.map(|r| r.received_at))
    }

    async fn projection_holdback(
        &self,
        env: &EnvId,
        events: &[String],
        after_seq: i64,
    ) -> Result<Holdback, StoreError> {
        let names = events_json(events);
        let row: Option<HoldbackRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("projection_holdback"),
                args![env.as_str(), &names, after_seq],
            )
            .await?;
        Ok(row.map_or_else(Holdback::default, |r| Holdback {
            held: r.held,
            pid: r.pid,
            since: r.since,
        }))
    }

    async fn projection_revisions(
        &self,
        env: &EnvId,
        name: &str,
        before_revision: i64,
        limit: i64,
    ) -> Result<Vec<RevisionRecord>, StoreError> {
        let rows: Vec<RevisionRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_projection_revisions"),
                args![env.as_str(), name, before_revision, limit],
            )
            .await?;
        Ok(rows.into_iter().map(RevisionRecord::from).collect())
    }

    async fn projection_revision(
        &self,
        env: &EnvId,
        name: &str,
        revision: i64,
    ) -> Result<Option<RevisionRecord>, StoreError> {
        let row: Option<RevisionRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("get_projection_revision"),
                args![env.as_str(), name, revision],
            )
            .await?;
        Ok(row.map(RevisionRecord::from))
    }

    async fn event_seq(&self, env: &EnvId, event_id: &str) -> Result<Option<i64>, StoreError> {
        self.db
            .reader()
            .await?
            .scalar_optional(sql!("event_seq_by_id"), args![env.as_str(), event_id])
            .await
    }
}
