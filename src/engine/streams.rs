//! Entity streams: appends with an expected version (stored, triggering and fanned out like any
//! emit, through the same group commit), reads by version, stream listings, an entity's history
//! with the runs each event started, snapshots, and deletion by tombstone.

use serde_json::Value;

use crate::domain::lifecycle::control::Actor;
use crate::domain::pattern::validate_event_name;
use crate::domain::stream::{
    AppendRefusal, AppendRequest, Direction, ExpectedVersion, TOMBSTONE_EVENT,
};
use crate::domain::time::Ts;
use crate::ids::{EntityId, EnvId, EventId, RunId};
use crate::store::events::{EventOutcome, EventRecord, NewEvent, SchemaStamp};
use crate::store::runs::{RunRecord, StepRecord};
use crate::store::streams::{NewSnapshot, Snapshot, StreamInfo, StreamQuery, StreamRange};

use super::events::check_idempotency_key;
use super::{Engine, EngineError, page_size};

/// The longest entity type accepted.
pub const MAX_ENTITY_TYPE: usize = 128;
/// Events one `ReadStream` returns at most.
pub const MAX_READ: i64 = 1000;

/// An append as a transport parsed it.
#[derive(Debug, Clone)]
pub struct AppendEvent {
    pub entity_id: EntityId,
    pub entity_type: String,
    pub event_name: String,
    pub data: Value,
    pub metadata: Value,
    pub expected: ExpectedVersion,
    pub idempotency_key: Option<String>,
    /// The event's schema version (0: the latest registered).
    pub version: i32,
    /// The run whose step appends (`X-Ironflow-Run-ID`).
    pub emitted_by_run: Option<RunId>,
}

#[derive(Debug, Clone)]
pub struct Appended {
    pub event_id: EventId,
    pub entity_version: i64,
    pub seq: i64,
    pub run_ids: Vec<RunId>,
    /// The idempotency key was used before: the first append's answer, nothing written.
    pub duplicate: bool,
}

/// One event of an entity's history and the runs it started, each with its steps.
#[derive(Debug, Clone)]
pub struct EntityHistoryEntry {
    pub event: EventRecord,
    pub runs: Vec<(RunRecord, Vec<StepRecord>)>,
}

#[derive(Debug, Clone)]
pub struct EntityHistoryPage {
    pub info: StreamInfo,
    pub entries: Vec<EntityHistoryEntry>,
    /// The version to continue from (`None`: no more).
    pub next_version: Option<i64>,
}

/// A stream refusal as the engine reports it: a version conflict is `Conflict` (retry after
/// reading the stream), a deleted stream or another type a failed precondition.
pub(crate) fn refused(refusal: AppendRefusal) -> EngineError {
    match refusal {
        r @ AppendRefusal::VersionConflict { .. } => EngineError::Conflict(r.to_string()),
        AppendRefusal::NoSuchStream { entity_id } => EngineError::not_found("stream", entity_id),
        r @ (AppendRefusal::Deleted { .. } | AppendRefusal::TypeMismatch { .. }) => {
            EngineError::FailedPrecondition(r.to_string())
        }
    }
}

fn entity_type(value: &str) -> Result<String, EngineError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(EngineError::InvalidArgument(
            "entity_type is required (e.g. \"order\")".into(),
        ));
    }
    if value.chars().count() > MAX_ENTITY_TYPE || value.chars().any(char::is_control) {
        return Err(EngineError::InvalidArgument(format!(
            "entity_type: at most {MAX_ENTITY_TYPE} printable characters"
        )));
    }
    Ok(value.to_owned())
}

impl Engine {
    /// Appends an event to an entity's stream at the version `expected` allows.
    pub async fn append_event(
        &self,
        env: &EnvId,
        request: AppendEvent,
    ) -> Result<Appended, EngineError> {
        if request.event_name.starts_with('$') || request.event_name.starts_with("ironflow/") {
            return Err(EngineError::InvalidArgument(format!(
                "event_name '{}': names starting with '$' or 'ironflow/' are reserved",
                request.event_name
            )));
        }
        validate_event_name(&request.event_name)
            .map_err(|e| EngineError::InvalidArgument(format!("event_name: {e}")))?;
        let entity_type = entity_type(&request.entity_type)?;
        check_idempotency_key(request.idempotency_key.as_deref())?;
        self.check_payload_size(&request.data, &request.metadata)?;
        if request.version < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "version {}: a schema version is 0 (the latest) or positive",
                request.version
            )));
        }
        let (schema, version) = self
            .enforce_schema(env, &request.event_name, request.version, &request.data)
            .await?;
        let event = NewEvent {
            id: EventId::generate(),
            env_id: env.clone(),
            name: request.event_name,
            data: request.data,
            metadata: request.metadata,
            source: "stream".into(),
            idempotency_key: request.idempotency_key.filter(|k| !k.is_empty()),
            version,
            received_at: Ts::now(),
            append: Some(AppendRequest {
                entity_id: request.entity_id,
                entity_type,
                expected: request.expected,
                tombstone: false,
            }),
            purge_below: false,
            emitted_by_run: request.emitted_by_run,
            schema,
            traceparent: crate::telemetry::current_traceparent(),
        };
        self.appended(env, event).await
    }

    async fn appended(&self, env: &EnvId, event: NewEvent) -> Result<Appended, EngineError> {
        match self.store_event(env, event, None).await? {
            EventOutcome::Stored {
                event_id,
                seq,
                run_ids,
                entity_version,
                ..
            } => Ok(Appended {
                event_id,
                seq,
                run_ids,
                entity_version: entity_version.unwrap_or_default(),
                duplicate: false,
            }),
            EventOutcome::Duplicate {
                event_id,
                seq,
                run_ids,
                entity_version,
            } => Ok(Appended {
                event_id,
                seq,
                run_ids,
                entity_version: entity_version.unwrap_or_default(),
                duplicate: true,
            }),
            EventOutcome::Refused(r) => {
                metrics::counter!("ironflow_stream_append_conflicts_total").increment(1);
                Err(refused(r))
            }
        }
    }

    /// Ends a stream with its `$stream.deleted` tombstone (at version + 1), dropping its
    /// snapshots and, with `purge`, its events below the tombstone. Returns the tombstone's
    /// version.
    pub async fn delete_stream(
        &self,
        env: &EnvId,
        entity: &EntityId,
        purge: bool,
        actor: &Actor,
    ) -> Result<i64, EngineError> {
        let info = self
            .store()
            .stream_info(env, entity)
            .await?
            .ok_or_else(|| EngineError::not_found("stream", entity))?;
        let event = NewEvent {
            id: EventId::generate(),
            env_id: env.clone(),
            name: TOMBSTONE_EVENT.into(),
            data: serde_json::json!({"purge": purge}),
            metadata: serde_json::json!({"actor_id": actor.key_id, "reason": actor.reason}),
            source: "stream".into(),
            idempotency_key: None,
            version: 0,
            received_at: Ts::now(),
            append: Some(AppendRequest {
                entity_id: entity.clone(),
                entity_type: info.entity_type,
                expected: ExpectedVersion::Any,
                tombstone: true,
            }),
            purge_below: purge,
            emitted_by_run: None,
            schema: SchemaStamp::default(),
            traceparent: crate::telemetry::current_traceparent(),
        };
        Ok(self.appended(env, event).await?.entity_version)
    }

    pub async fn stream_info(
        &self,
        env: &EnvId,
        entity: &EntityId,
    ) -> Result<StreamInfo, EngineError> {
        self.store()
            .stream_info(env, entity)
            .await?
            .ok_or_else(|| EngineError::not_found("stream", entity))
    }

    /// A stream's events (none for a stream never written) and how many it holds.
    pub async fn read_stream(
        &self,
        env: &EnvId,
        entity: &EntityId,
        from_version: i64,
        limit: i32,
        direction: Direction,
    ) -> Result<(Vec<EventRecord>, i64), EngineError> {
        if from_version < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "from_version {from_version} must not be negative"
            )));
        }
        let range = StreamRange {
            from_version,
            direction,
            since: None,
            until: None,
            limit: page_size(i64::from(limit), 100, MAX_READ)?,
        };
        let events = self.store().read_stream(env, entity, &range).await?;
        let total = self
            .store()
            .stream_info(env, entity)
            .await?
            .map_or(0, |i| i.event_count);
        Ok((events, total))
    }

    pub async fn list_streams(
        &self,
        env: &EnvId,
        mut query: StreamQuery,
        limit: i32,
        offset: i32,
    ) -> Result<(Vec<StreamInfo>, i64), EngineError> {
        if offset < 0 {
            return Err(EngineError::InvalidArgument(
                "offset must not be negative".into(),
            ));
        }
        query.limit = page_size(i64::from(limit), 50, 500)?;
        query.offset = i64::from(offset);
        Ok(self.store().list_streams(env, &query).await?)
    }

    /// A page of an entity's events, each with the runs it started and their steps.
    pub async fn entity_history(
        &self,
        env: &EnvId,
        entity: &EntityId,
        mut range: StreamRange,
        limit: i32,
    ) -> Result<EntityHistoryPage, EngineError> {
        if range.from_version < 0 {
            return Err(EngineError::InvalidArgument(
                "from_version must not be negative".into(),
            ));
        }
        let info = self.stream_info(env, entity).await?;
        let limit = page_size(i64::from(limit), 50, 200)?;
        range.limit = limit + 1;
        let mut events = self.store().read_stream(env, entity, &range).await?;
        let more = events.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_version = if more {
            events
                .last()
                .and_then(|e| e.entity.as_ref())
                .map(|e| match range.direction {
                    Direction::Forward => e.version + 1,
                    Direction::Backward => e.version - 1,
                })
                .filter(|v| *v > 0)
        } else {
            None
        };
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            let mut runs = Vec::new();
            for id in self.store().run_ids_for_event(env, &event.id).await? {
                if let Some(run) = self.store().get_run(env, &id).await? {
                    let steps = self.store().run_steps(env, &id).await?;
                    runs.push((run, steps));
                }
            }
            entries.push(EntityHistoryEntry { event, runs });
        }
        Ok(EntityHistoryPage {
            info,
            entries,
            next_version,
        })
    }

    /// Stores a snapshot of a stream's state at a version it reached (0: its head).
    pub async fn create_snapshot(
        &self,
        env: &EnvId,
        entity: &EntityId,
        entity_type: &str,
        version: i64,
        state: Value,
    ) -> Result<String, EngineError> {
        if version < 0 {
            return Err(EngineError::InvalidArgument(format!(
                "entity_version {version} must not be negative"
            )));
        }
        self.check_payload_size(&state, &Value::Null)?;
        let version = if version == 0 {
            self.stream_info(env, entity).await?.version
        } else {
            version
        };
        let snapshot = NewSnapshot {
            id: uuid::Uuid::now_v7().to_string(),
            env_id: env.clone(),
            entity_id: entity.clone(),
            entity_type: entity_type.trim().to_owned(),
            entity_version: version,
            state,
            created_at: Ts::now(),
        };
        self.store()
            .create_snapshot(&snapshot)
            .await?
            .map_err(EngineError::FailedPrecondition)?;
        Ok(snapshot.id)
    }

    /// The newest snapshot at or before `before_version` (0: the newest).
    pub async fn get_snapshot(
        &self,
        env: &EnvId,
        entity: &EntityId,
        before_version: i64,
    ) -> Result<Snapshot, EngineError> {
        if before_version < 0 {
            return Err(EngineError::InvalidArgument(
                "before_version must not be negative".into(),
            ));
        }
        self.store()
            .get_snapshot(env, entity, (before_version > 0).then_some(before_version))
            .await?
            .ok_or_else(|| EngineError::not_found("snapshot of stream", entity))
    }

    /// The streams a run touched (its trigger's, and those its steps appended to).
    pub async fn run_streams(
        &self,
        env: &EnvId,
        run: &RunId,
    ) -> Result<Vec<EntityId>, EngineError> {
        if self.store().get_run(env, run).await?.is_none() {
            return Err(EngineError::not_found("run", run));
        }
        Ok(self.store().run_streams(env, run).await?)
    }
}
