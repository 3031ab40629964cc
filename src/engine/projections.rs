//! Projections: registration, the runner lease, the feed of events a runner folds (stream or
//! poll) and the saves and acks that move its cursor, status and lag, pause and resume, and the
//! read-your-writes waits, woken by commits and cursor moves.

use std::time::Duration;

use serde_json::Value;

use super::{Engine, EngineError};
use crate::domain::lifecycle::control::Actor;
use crate::domain::projection::{
    Catchup, Definition, HeldLease, PresentedLease, ProjectionKind, ProjectionStatus, Registration,
    RunnerRefusal, catchup, check_events, check_name, partition_key, partition_of,
};
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::events::EventRecord;
use crate::store::projections::{
    Change, Holdback, PartitionState, Position, ProjectionQuery, ProjectionRecord, Registered,
    RevisionRecord, StateSave,
};

/// The longest a unary catch-up wait holds the call.
pub const MAX_CATCHUP_WAIT: Duration = Duration::from_secs(60);
/// The longest the streamed catch-up wait holds the call.
pub const MAX_CATCHUP_STREAM_WAIT: Duration = Duration::from_secs(300);
/// How often an idle feed sends a heartbeat (when the runner accepts them).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often a feed held back by an open transaction looks again: the end of a transaction that
/// stored no event wakes nobody.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(500);
/// Largest batch a runner may ask for.
const MAX_BATCH: i64 = 1000;

/// What a runner (or `RegisterProjection`) asks for.
#[derive(Debug, Clone)]
pub struct RegisterProjection {
    pub name: String,
    pub definition: Definition,
    /// Who registers it; its reason is the registration's `change_reason`.
    pub actor: Actor,
}

/// One event as a projection gets it: the stored event and the partition it falls in.
#[derive(Debug, Clone)]
pub struct ProjectedEvent {
    pub event: EventRecord,
    pub partition: String,
}

/// What a feed yields next.
#[derive(Debug)]
pub enum FeedItem {
    Events(Vec<ProjectedEvent>),
    Heartbeat,
}

/// A projection as status shows it: cursor, head, lag, and what holds it back.
#[derive(Debug, Clone)]
pub struct ProjectionReport {
    pub projection: ProjectionRecord,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub holdback: Holdback,
}

impl ProjectionReport {
    /// A sentence for a projection held back by an open transaction (none otherwise).
    pub fn holdback_message(&self) -> Option<String> {
        let h = &self.holdback;
        if h.held == 0 {
            return None;
        }
        let who = match (h.pid, h.since) {
            (Some(pid), Some(since)) => format!(
                "the open transaction of database backend pid {pid} (open for {:.1} s)",
                (Ts::now().millis() - since.millis()) as f64 / 1000.0
            ),
            (Some(pid), None) => format!("the open transaction of database backend pid {pid}"),
            _ => "an open database transaction".to_owned(),
        };
        Some(format!(
            "held back: {} committed event(s) wait behind {who}, which may still add an earlier one",
            h.held
        ))
    }
}

/// A projection's events for one runner under one lease, from the durable cursor on.
pub struct ProjectionFeed {
    engine: Engine,
    env: EnvId,
    name: String,
    lease: Option<PresentedLease>,
    batch: i64,
    heartbeats: bool,
    position: i64,
    definition: Definition,
}

fn refused(refusal: RunnerRefusal) -> EngineError {
    match refusal {
        RunnerRefusal::Missing(name) => EngineError::NotFound {
            kind: "projection",
            id: name,
        },
        // ABORTED: the SDK runner's one "lease lost" code.
        RunnerRefusal::Lease(lease) => EngineError::Conflict(lease.to_string()),
    }
}

fn batch_size(requested: i32) -> i64 {
    match i64::from(requested) {
        n if n <= 0 => 100,
        n => n.min(MAX_BATCH),
    }
}

impl ProjectionFeed {
    /// The next events past the feed's position, waiting for commits when there are none; a
    /// heartbeat after a quiet interval. A lost lease ends the feed with `Conflict` (ABORTED).
    pub async fn next(&mut self) -> Result<FeedItem, EngineError> {
        let changes = self.engine.bus().projection_changes();
        let idle_since = tokio::time::Instant::now();
        loop {
            let notified = changes.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (delivers, events) = self.take().await?;
            if !events.is_empty() {
                return Ok(FeedItem::Events(events));
            }
            let mut recheck = HEARTBEAT;
            if delivers {
                let held = self
                    .engine
                    .store()
                    .projection_holdback(&self.env, &self.definition.events, self.position)
                    .await?;
                if held.held > 0 {
                    recheck = HELD_BACK_RECHECK;
                }
            }
            let heartbeat_due = idle_since + HEARTBEAT;
            let wake = (tokio::time::Instant::now() + recheck).min(heartbeat_due);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
                () = self.engine.shutdown_token().cancelled() => {
                    return Err(EngineError::FailedPrecondition("the server is shutting down".into()));
                }
            }
            if self.heartbeats && tokio::time::Instant::now() >= heartbeat_due {
                return Ok(FeedItem::Heartbeat);
            }
        }
    }

    /// The events available now (at most one batch), without waiting: the poll form.
    pub async fn poll(&mut self) -> Result<Vec<ProjectedEvent>, EngineError> {
        Ok(self.take().await?.1)
    }

    /// Under the lease: whether the projection delivers now and, if so, the next batch past the
    /// feed's position (noted as delivered, the position moved past it).
    async fn take(&mut self) -> Result<(bool, Vec<ProjectedEvent>), EngineError> {
        let record = self
            .engine
            .store()
            .check_projection_lease(&self.env, &self.name, self.lease.as_ref())
            .await?
            .map_err(refused)?;
        self.definition = record.definition;
        if !record.status.delivers() {
            return Ok((false, Vec::new()));
        }
        let events = self
            .engine
            .store()
            .projection_events(
                &self.env,
                &self.definition.events,
                self.position,
                self.batch,
            )
            .await?;
        if let Some(last) = events.last() {
            self.position = last.seq;
            self.engine
                .store()
                .note_projection_delivered(&self.env, &self.name, last.seq)
                .await?;
        }
        let key = &self.definition.partition_key;
        Ok((true, events.into_iter().map(|e| project(key, e)).collect()))
    }
}

fn project(partition_key: &str, event: EventRecord) -> ProjectedEvent {
    let partition = partition_of(
        partition_key,
        &event.data,
        event.entity.as_ref().map(|e| e.entity_id.as_str()),
    );
    ProjectedEvent { event, partition }
}

/// The state a partition has, or the empty state of a registered projection that saved none.
#[derive(Debug, Clone)]
pub struct ProjectionState {
    pub projection: ProjectionRecord,
    pub partition: String,
    pub saved: Option<PartitionState>,
}

/// A managed save or an external ack, as the runner sends it.
#[derive(Debug, Clone)]
pub struct RunnerCommit {
    pub name: String,
    pub lease: Option<PresentedLease>,
    pub position: Position,
}

impl Engine {
    pub fn projection_lease_ttl(&self) -> Duration {
        self.inner.options.projection_lease_ttl
    }

    pub async fn register_projection(
        &self,
        env: &EnvId,
        request: RegisterProjection,
    ) -> Result<Registered, EngineError> {
        check_name(&request.name).map_err(EngineError::InvalidArgument)?;
        let mut definition = request.definition;
        definition.events =
            check_events(&definition.events).map_err(EngineError::InvalidArgument)?;
        definition.partition_key = definition.partition_key.trim().to_owned();
        let change = Change::by(request.actor);
        let store = self.store();
        let registered = match store
            .register_projection(env, &request.name, &definition, &change)
            .await
        {
            // Two runners registered the same new name at once: the second sees the first's.
            Err(crate::store::StoreError::Conflict(_)) => {
                store
                    .register_projection(env, &request.name, &definition, &change)
                    .await?
            }
            other => other?,
        };
        if let Registration::Conflict(why) = &registered.registration {
            return Err(EngineError::InvalidArgument(format!(
                "projection '{}': {why}",
                request.name
            )));
        }
        Ok(registered)
    }

    pub async fn projection(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<ProjectionRecord, EngineError> {
        self.store()
            .get_projection(env, name)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                kind: "projection",
                id: name.to_owned(),
            })
    }

    pub async fn delete_projection(
        &self,
        env: &EnvId,
        name: &str,
        actor: Actor,
    ) -> Result<(), EngineError> {
        let change = Change::by(actor);
        let Some(projection) = self.store().get_projection(env, name).await? else {
            return Err(EngineError::NotFound {
                kind: "projection",
                id: name.to_owned(),
            });
        };
        let drop = self.sql_drop_statements(&projection);
        if self
            .store()
            .delete_projection(env, name, &change, &drop)
            .await?
        {
            self.bus().projections_changed();
            Ok(())
        } else {
            Err(EngineError::NotFound {
                kind: "projection",
                id: name.to_owned(),
            })
        }
    }

    pub async fn list_projections(
        &self,
        env: &EnvId,
        mut query: ProjectionQuery,
    ) -> Result<(Vec<ProjectionRecord>, i64), EngineError> {
        query.limit = super::page_size(query.limit, 50, 1000)?;
        if query.offset < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "offset must not be negative (got {})",
                query.offset
            )));
        }
        if let Some(status) = &query.status
            && !matches!(status.as_str(), "active" | "paused" | "error")
        {
            return Err(EngineError::InvalidArgument(format!(
                "status must be active, paused or error (got '{status}')"
            )));
        }
        if let Some(kind) = &query.kind
            && !matches!(kind.as_str(), "managed" | "external" | "sql")
        {
            return Err(EngineError::InvalidArgument(format!(
                "mode must be managed, external or sql (got '{kind}')"
            )));
        }
        Ok(self.store().list_projections(env, &query).await?)
    }

    /// `AcquireProjectionLease`: a fresh token at the next epoch, or `None` while another
    /// runner's lease is live.
    pub async fn acquire_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<Option<HeldLease>, EngineError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.store()
            .acquire_projection_lease(env, name, self.projection_lease_ttl(), token)
            .await?
            .map_err(refused)
    }

    pub async fn renew_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
    ) -> Result<HeldLease, EngineError> {
        self.store()
            .renew_projection_lease(env, name, lease, self.projection_lease_ttl())
            .await?
            .map_err(refused)
    }

    pub async fn release_projection_lease(
        &self,
        env: &EnvId,
        name: &str,
        lease: &PresentedLease,
    ) -> Result<(), EngineError> {
        Ok(self
            .store()
            .release_projection_lease(env, name, lease)
            .await?)
    }

    /// Opens a runner's feed at the durable cursor (counting a redelivery when the last feed
    /// delivered past a cursor that has not moved since).
    pub async fn open_projection_feed(
        &self,
        env: &EnvId,
        name: &str,
        lease: Option<PresentedLease>,
        batch: i32,
        heartbeats: bool,
    ) -> Result<ProjectionFeed, EngineError> {
        let record = self
            .store()
            .open_projection_stream(env, name, lease.as_ref())
            .await?
            .map_err(refused)?;
        Ok(ProjectionFeed {
            engine: self.clone(),
            env: env.clone(),
            name: name.to_owned(),
            lease,
            batch: batch_size(batch),
            heartbeats,
            position: record.cursor_seq,
            definition: record.definition,
        })
    }

    /// `SaveProjectionState`: a managed partition's state and the cursor, under the lease.
    pub async fn save_projection_state(
        &self,
        env: &EnvId,
        commit: RunnerCommit,
        partition: &str,
        state: Value,
    ) -> Result<(), EngineError> {
        let record = self.projection(env, &commit.name).await?;
        if record.definition.kind != ProjectionKind::Managed {
            return Err(EngineError::FailedPrecondition(format!(
                "projection '{}' is {}: only a managed projection saves state (an external one acknowledges)",
                commit.name,
                record.definition.kind.as_str()
            )));
        }
        check_position(&commit.position)?;
        let save = StateSave {
            env_id: env.clone(),
            name: commit.name,
            lease: commit.lease,
            partition: partition_key(partition).to_owned(),
            state,
            position: commit.position,
        };
        self.store()
            .save_projection_state(&save)
            .await?
            .map_err(refused)?;
        self.bus().projections_changed();
        Ok(())
    }

    /// `AckProjectionEvents`: an external projection's cursor, under the lease.
    pub async fn ack_projection_events(
        &self,
        env: &EnvId,
        commit: RunnerCommit,
    ) -> Result<(), EngineError> {
        check_position(&commit.position)?;
        self.store()
            .ack_projection_events(env, &commit.name, commit.lease.as_ref(), &commit.position)
            .await?
            .map_err(refused)?;
        self.bus().projections_changed();
        Ok(())
    }

    /// `GetProjection`: a partition's state (`""` is the global one); a registered projection
    /// whose partition saved nothing yet answers with no state.
    pub async fn projection_state(
        &self,
        env: &EnvId,
        name: &str,
        partition: &str,
    ) -> Result<ProjectionState, EngineError> {
        let projection = self.projection(env, name).await?;
        let key = partition_key(partition).to_owned();
        let saved = self
            .store()
            .projection_state(env, name, projection.generation, &key)
            .await?;
        Ok(ProjectionState {
            projection,
            partition: key,
            saved,
        })
    }

    pub async fn projection_partitions(
        &self,
        env: &EnvId,
        name: &str,
        search: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, EngineError> {
        let projection = self.projection(env, name).await?;
        let limit = super::page_size(limit, 100, 1000)?;
        Ok(self
            .store()
            .projection_partitions(env, name, projection.generation, search, limit)
            .await?)
    }

    /// Status: the cursor, how many events and how long it lags, and what holds it back.
    pub async fn projection_report(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<ProjectionReport, EngineError> {
        let projection = self.projection(env, name).await?;
        let events = &projection.definition.events;
        let store = self.store();
        let lag_events = store
            .pending_projection_events(env, events, projection.cursor_seq, None)
            .await?;
        let lag_seconds = if lag_events > 0 {
            store
                .oldest_pending_projection_event(env, events, projection.cursor_seq)
                .await?
                .map_or(0.0, |at| {
                    (Ts::now().millis() - at.millis()).max(0) as f64 / 1000.0
                })
        } else {
            0.0
        };
        let holdback = store
            .projection_holdback(env, events, projection.cursor_seq)
            .await?;
        Ok(ProjectionReport {
            projection,
            lag_events,
            lag_seconds,
            holdback,
        })
    }

    /// Pause (nothing delivered) or resume (delivery from the cursor, the error cleared).
    pub async fn set_projection_status(
        &self,
        env: &EnvId,
        name: &str,
        status: ProjectionStatus,
        actor: Actor,
    ) -> Result<ProjectionStatus, EngineError> {
        let change = Change::by(actor);
        if !self
            .store()
            .set_projection_status(env, name, status, "", &change)
            .await?
        {
            return Err(EngineError::NotFound {
                kind: "projection",
                id: name.to_owned(),
            });
        }
        self.bus().projections_changed();
        Ok(status)
    }

    /// Where a projection stands against `min_seq` now.
    pub async fn projection_catchup(
        &self,
        env: &EnvId,
        name: &str,
        min_seq: i64,
    ) -> Result<(ProjectionRecord, Catchup), EngineError> {
        let projection = self.projection(env, name).await?;
        let pending = if min_seq > 0 {
            self.store()
                .pending_projection_events(
                    env,
                    &projection.definition.events,
                    projection.cursor_seq,
                    Some(min_seq),
                )
                .await?
        } else {
            0
        };
        let state = catchup(projection.cursor_seq, min_seq, pending);
        Ok((projection, state))
    }

    /// Waits until no event the projection follows lies between its cursor and `min_seq`, or
    /// `timeout` passes (`timed_out` then); woken by cursor moves, never by a timer.
    pub async fn wait_projection_catchup(
        &self,
        env: &EnvId,
        name: &str,
        min_seq: i64,
        timeout: Duration,
        mut progress: impl FnMut(&Catchup),
    ) -> Result<(ProjectionRecord, Catchup, bool), EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let changes = self.bus().projection_changes();
        let mut last_cursor = None;
        loop {
            let notified = changes.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (projection, state) = self.projection_catchup(env, name, min_seq).await?;
            if state.caught_up {
                return Ok((projection, state, false));
            }
            if last_cursor != Some(state.current_seq) {
                last_cursor = Some(state.current_seq);
                progress(&state);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Ok((projection, state, true));
                }
                () = self.shutdown_token().cancelled() => {
                    return Ok((projection, state, true));
                }
            }
        }
    }

    /// The sequence number of an event (for `WaitForEvent`).
    pub async fn event_seq(&self, env: &EnvId, event_id: &str) -> Result<i64, EngineError> {
        self.store()
            .event_seq(env, event_id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                kind: "event",
                id: event_id.to_owned(),
            })
    }

    pub async fn projection_revisions(
        &self,
        env: &EnvId,
        name: &str,
        before_revision: i64,
        limit: i64,
    ) -> Result<(Vec<RevisionRecord>, bool), EngineError> {
        let limit = super::page_size(limit, 50, 200)?;
        let mut rows = self
            .store()
            .projection_revisions(env, name, before_revision.max(0), limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok((rows, more))
    }

    pub async fn projection_revision(
        &self,
        env: &EnvId,
        name: &str,
        revision: i64,
    ) -> Result<RevisionRecord, EngineError> {
        self.store()
            .projection_revision(env, name, revision)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                kind: "projection revision",
                id: format!("{name}@{revision}"),
            })
    }
}

fn check_position(position: &Position) -> Result<(), EngineError> {
    if position.seq <= 0 {
        return Err(EngineError::InvalidArgument(format!(
            "last_event_seq must be the seq of the last event handled (got {})",
            position.seq
        )));
    }
    Ok(())
}
