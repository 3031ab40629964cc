//! Entity streams in the store: their heads, their events read by version, their snapshots and
//! the streams a run touched. Appends (and the tombstone) go through [`super::events`], in the
//! same transaction and group commit as every event.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::events::{EventRecord, EventRow};
use super::sql::{Conn, args, sql};
use super::writes::escape_like;
use crate::domain::stream::{Direction, StreamHead, check_snapshot};
use crate::domain::time::Ts;
use crate::ids::{EntityId, EnvId, RunId};

#[async_trait]
pub trait StreamStore: Send + Sync {
    async fn stream_info(
        &self,
        env: &EnvId,
        entity: &EntityId,
    ) -> Result<Option<StreamInfo>, StoreError>;

    /// A stream's events from a version on (forward) or down from it (backward; 0 = the head).
    async fn read_stream(
        &self,
        env: &EnvId,
        entity: &EntityId,
        range: &StreamRange,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Streams of the environment, by entity id, and how many match in all.
    async fn list_streams(
        &self,
        env: &EnvId,
        query: &StreamQuery,
    ) -> Result<(Vec<StreamInfo>, i64), StoreError>;

    /// Stores a snapshot of a live stream at a version it has reached; the refusal says why not.
    async fn create_snapshot(
        &self,
        snapshot: &NewSnapshot,
    ) -> Result<Result<(), String>, StoreError>;

    /// The newest snapshot at or before `before_version` (`None`: the newest of all).
    async fn get_snapshot(
        &self,
        env: &EnvId,
        entity: &EntityId,
        before_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// The streams a run touched: its trigger's and those its steps appended to.
    async fn run_streams(&self, env: &EnvId, run: &RunId) -> Result<Vec<EntityId>, StoreError>;
}

#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub entity_id: EntityId,
    pub entity_type: String,
    pub version: i64,
    pub event_count: i64,
    pub deleted: bool,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, Default)]
pub struct StreamRange {
    /// Forward: the first version to read (0 or 1 = the start). Backward: the highest version to
    /// read (0 = the head).
    pub from_version: i64,
    pub direction: Direction,
    pub since: Option<Ts>,
    pub until: Option<Ts>,
    pub limit: i64,
}

#[derive(Debug, Clone, Default)]
pub struct StreamQuery {
    pub entity_type: Option<String>,
    /// A substring of the entity id.
    pub search: Option<String>,
    pub include_deleted: bool,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub id: String,
    pub env_id: EnvId,
    pub entity_id: EntityId,
    pub entity_type: String,
    pub entity_version: i64,
    pub state: Value,
    pub created_at: Ts,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub entity_id: EntityId,
    pub entity_type: String,
    pub entity_version: i64,
    pub state: Value,
    pub created_at: Ts,
}

#[derive(sqlx::FromRow)]
struct StreamRow {
    entity_id: String,
    entity_type: String,
    version: i64,
    event_count: i64,
    deleted: bool,
    created_at: Ts,
    updated_at: Ts,
}

impl From<StreamRow> for StreamInfo {
    fn from(r: StreamRow) -> Self {
        Self {
            entity_id: EntityId::from_stored(r.entity_id),
            entity_type: r.entity_type,
            version: r.version,
            event_count: r.event_count,
            deleted: r.deleted,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct StreamPageRow {
    #[sqlx(flatten)]
    stream: StreamRow,
    total: i64,
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    entity_type: String,
    version: i64,
    deleted: bool,
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    id: String,
    entity_id: String,
    entity_type: String,
    entity_version: i64,
    state: Json<Value>,
    created_at: Ts,
}

#[async_trait]
impl<D: Db> StreamStore for SqlStore<D> {
    async fn stream_info(
        &self,
        env: &EnvId,
        entity: &EntityId,
    ) -> Result<Option<StreamInfo>, StoreError> {
        let row: Option<StreamRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("stream_info"), args![env.as_str(), entity.as_str()])
            .await?;
        Ok(row.map(Into::into))
    }

    async fn read_stream(
        &self,
        env: &EnvId,
        entity: &EntityId,
        range: &StreamRange,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let query = match range.direction {
            Direction::Forward => sql!("read_stream_forward"),
            Direction::Backward => sql!("read_stream_backward"),
        };
        let rows: Vec<EventRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                query,
                args![
                    env.as_str(),
                    entity.as_str(),
                    range.from_version,
                    range.since,
                    range.until,
                    range.limit
                ],
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn list_streams(
        &self,
        env: &EnvId,
        q: &StreamQuery,
    ) -> Result<(Vec<StreamInfo>, i64), StoreError> {
        let search = q.search.as_ref().map(|s| format!("%{}%", escape_like(s)));
        let rows: Vec<StreamPageRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_streams"),
                args![
                    env.as_str(),
                    q.entity_type.as_deref(),
                    search.as_deref(),
                    q.include_deleted,
                    q.limit,
                    q.offset
                ],
            )
            .await?;
        let total = match rows.first() {
            Some(r) => r.total,
            // An offset past the end still says how many there are.
            None if q.offset > 0 => {
                self.db
                    .reader()
                    .await?
                    .scalar(
                        sql!("count_streams"),
                        args![
                            env.as_str(),
                            q.entity_type.as_deref(),
                            search.as_deref(),
                            q.include_deleted
                        ],
                    )
                    .await?
            }
            None => 0,
        };
        Ok((rows.into_iter().map(|r| r.stream.into()).collect(), total))
    }

    async fn create_snapshot(&self, s: &NewSnapshot) -> Result<Result<(), String>, StoreError> {
        let mut tx = self.db.begin().await?;
        let head: Option<HeadRow> = tx
            .fetch_optional(
                sql!("lock_stream_head"),
                args![s.env_id.as_str(), s.entity_id.as_str()],
            )
            .await?;
        let head = head.map(|h| StreamHead {
            entity_type: h.entity_type,
            version: h.version,
            deleted: h.deleted,
        });
        if let Err(refusal) = check_snapshot(
            &s.entity_id,
            head.as_ref(),
            &s.entity_type,
            s.entity_version,
        ) {
            return Ok(Err(refusal));
        }
        tx.execute(
            sql!("insert_stream_snapshot"),
            args![
                s.id.as_str(),
                s.env_id.as_str(),
                s.entity_id.as_str(),
                head.as_ref()
                    .map_or(s.entity_type.as_str(), |h| h.entity_type.as_str()),
                s.entity_version,
                &s.state,
                s.created_at
            ],
        )
        .await?;
        D::commit(tx).await?;
        Ok(Ok(()))
    }

    async fn get_snapshot(
        &self,
        env: &EnvId,
        entity: &EntityId,
        before_version: Option<i64>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<SnapshotRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(
                sql!("get_stream_snapshot"),
                args![env.as_str(), entity.as_str(), before_version],
            )
            .await?;
        Ok(row.map(|r| Snapshot {
            id: r.id,
            entity_id: EntityId::from_stored(r.entity_id),
            entity_type: r.entity_type,
            entity_version: r.entity_version,
            state: r.state.0,
            created_at: r.created_at,
        }))
    }

    async fn run_streams(&self, env: &EnvId, run: &RunId) -> Result<Vec<EntityId>, StoreError> {
        let ids: Vec<String> = self
            .db
            .reader()
            .await?
            .scalars(sql!("run_streams"), args![env.as_str(), run.as_str()])
            .await?;
        Ok(ids.into_iter().map(EntityId::from_stored).collect())
    }
}
