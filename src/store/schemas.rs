//! Event schemas in the store: one JSON Schema per event name and version, the definitions
//! archived before each replacement or deletion (append-only revisions), and the traffic the
//! enforcement report samples.

use async_trait::async_trait;
use serde_json::json;

use super::StoreError;
use super::apply::write_history;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::control::Actor;
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// Registers or replaces (archiving the old definition) a schema; `true` when it is new.
    async fn register_schema(&self, schema: &NewSchema, actor: &Actor) -> Result<bool, StoreError>;

    /// One version (`None`: the latest).
    async fn get_schema(
        &self,
        env: &EnvId,
        event_name: &str,
        version: Option<i32>,
    ) -> Result<Option<SchemaRecord>, StoreError>;

    /// Every version of an event name's schema, oldest first.
    async fn schemas_of(
        &self,
        env: &EnvId,
        event_name: &str,
    ) -> Result<Vec<SchemaRecord>, StoreError>;

    /// Schemas by event name and version, and how many match in all.
    async fn list_schemas(
        &self,
        env: &EnvId,
        event_name: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SchemaRecord>, i64), StoreError>;

    /// Deletes one version, archiving it; `false` when there was none.
    async fn delete_schema(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        change_reason: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError>;

    /// Archived definitions of one version, newest first, below `before_revision`.
    async fn schema_history(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        before_revision: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SchemaRevision>, StoreError>;

    async fn schema_revision(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        revision: i64,
    ) -> Result<Option<SchemaRevision>, StoreError>;

    /// The newest `scan_cap` events of a name since `since`, grouped by the version and schema
    /// hash they carry, and whether the cap was hit.
    async fn schema_traffic(
        &self,
        env: &EnvId,
        event_name: &str,
        since: Ts,
        scan_cap: i64,
    ) -> Result<(Vec<SchemaTraffic>, bool), StoreError>;
}

#[derive(Debug, Clone)]
pub struct NewSchema {
    pub env_id: EnvId,
    pub event_name: String,
    pub version: i32,
    pub schema_json: String,
    pub hash: String,
    pub description: String,
    pub change_reason: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaRecord {
    pub event_name: String,
    pub version: i32,
    pub schema_json: String,
    pub hash: String,
    pub description: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaRevision {
    pub revision: i64,
    pub event_name: String,
    pub version: i32,
    pub schema_json: String,
    pub description: String,
    pub change_type: String,
    pub change_reason: String,
    pub actor_id: String,
    pub recorded_at: Ts,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchemaTraffic {
    pub version: i32,
    pub schema_hash: String,
    pub count: i64,
}

#[derive(sqlx::FromRow)]
struct SchemaPageRow {
    #[sqlx(flatten)]
    schema: SchemaRecord,
    total: i64,
}

#[derive(sqlx::FromRow)]
struct TrafficRow {
    #[sqlx(flatten)]
    traffic: SchemaTraffic,
    scanned: i64,
}

/// Archives `old` (before it is replaced or deleted) in the revisions and the history.
async fn archive<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    old: &SchemaRecord,
    change_type: &str,
    change_reason: &str,
    actor: &Actor,
    at: Ts,
) -> Result<(), StoreError> {
    conn.execute(
        sql!("archive_event_schema"),
        args![
            env.as_str(),
            old.event_name.as_str(),
            old.version,
            old.schema_json.as_str(),
            old.description.as_str(),
            change_type,
            change_reason,
            actor.key_id.as_str(),
            at
        ],
    )
    .await?;
    Ok(())
}

fn schema_entry(
    env: &EnvId,
    kind: HistoryKind,
    schema: &NewSchema,
    status: &str,
    actor: &Actor,
) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind,
        run_id: None,
        function_id: None,
        event_id: None,
        payload: json!({
            "event_name": schema.event_name, "version": schema.version, "hash": schema.hash,
            "status": status, "change_reason": schema.change_reason,
            "actor_id": actor.key_id, "reason": actor.reason,
        }),
    }
}

#[async_trait]
impl<D: Db> SchemaStore for SqlStore<D> {
    async fn register_schema(&self, s: &NewSchema, actor: &Actor) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let old: Option<SchemaRecord> = tx
            .fetch_optional(
                sql!("lock_event_schema"),
                args![s.env_id.as_str(), s.event_name.as_str(), s.version],
            )
            .await?;
        let created = old.is_none();
        if let Some(old) = &old {
            if old.hash == s.hash && old.description == s.description {
                // The same definition again: nothing changes, nothing is archived.
                D::commit(tx).await?;
                return Ok(false);
            }
            archive(
                &mut *tx,
                &s.env_id,
                old,
                "updated",
                &s.change_reason,
                actor,
                now,
            )
            .await?;
        }
        tx.execute(
            sql!("upsert_event_schema"),
            args![
                s.env_id.as_str(),
                s.event_name.as_str(),
                s.version,
                s.schema_json.as_str(),
                s.hash.as_str(),
                s.description.as_str(),
                now
            ],
        )
        .await?;
        let status = if created { "created" } else { "updated" };
        let entry = schema_entry(&s.env_id, HistoryKind::SchemaRegistered, s, status, actor);
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(created)
    }

    async fn get_schema(
        &self,
        env: &EnvId,
        event_name: &str,
        version: Option<i32>,
    ) -> Result<Option<SchemaRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                sql!("get_event_schema"),
                args![env.as_str(), event_name, version],
            )
            .await
    }

    async fn schemas_of(
        &self,
        env: &EnvId,
        event_name: &str,
    ) -> Result<Vec<SchemaRecord>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("event_schemas_of"), args![env.as_str(), event_name])
            .await
    }

    async fn list_schemas(
        &self,
        env: &EnvId,
        event_name: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SchemaRecord>, i64), StoreError> {
        let mut reader = self.db.reader().await?;
        let rows: Vec<SchemaPageRow> = reader
            .fetch_all(
                sql!("list_event_schemas"),
                args![env.as_str(), event_name, limit, offset],
            )
            .await?;
        let total = match rows.first() {
            Some(r) => r.total,
            None => {
                reader
                    .scalar(sql!("count_event_schemas"), args![env.as_str(), event_name])
                    .await?
            }
        };
        Ok((rows.into_iter().map(|r| r.schema).collect(), total))
    }

    async fn delete_schema(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        change_reason: &str,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let old: Option<SchemaRecord> = tx
            .fetch_optional(
                sql!("lock_event_schema"),
                args![env.as_str(), event_name, version],
            )
            .await?;
        let Some(old) = old else {
            return Ok(false);
        };
        archive(&mut *tx, env, &old, "deleted", change_reason, actor, now).await?;
        tx.execute(
            sql!("delete_event_schema"),
            args![env.as_str(), event_name, version],
        )
        .await?;
        let gone = NewSchema {
            env_id: env.clone(),
            event_name: old.event_name.clone(),
            version,
            schema_json: old.schema_json.clone(),
            hash: old.hash.clone(),
            description: old.description.clone(),
            change_reason: change_reason.to_owned(),
        };
        let entry = schema_entry(env, HistoryKind::SchemaDeleted, &gone, "deleted", actor);
        write_history(&mut *tx, std::slice::from_ref(&entry), now).await?;
        D::commit(tx).await?;
        Ok(true)
    }

    async fn schema_history(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        before_revision: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SchemaRevision>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(
                sql!("event_schema_history"),
                args![env.as_str(), event_name, version, before_revision, limit],
            )
            .await
    }

    async fn schema_revision(
        &self,
        env: &EnvId,
        event_name: &str,
        version: i32,
        revision: i64,
    ) -> Result<Option<SchemaRevision>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                sql!("event_schema_revision"),
                args![env.as_str(), event_name, version, revision],
            )
            .await
    }

    async fn schema_traffic(
        &self,
        env: &EnvId,
        event_name: &str,
        since: Ts,
        scan_cap: i64,
    ) -> Result<(Vec<SchemaTraffic>, bool), StoreError> {
        let rows: Vec<TrafficRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("event_schema_traffic"),
                args![env.as_str(), event_name, since, scan_cap],
            )
            .await?;
        let truncated = rows.first().is_some_and(|r| r.scanned >= scan_cap);
        Ok((rows.into_iter().map(|r| r.traffic).collect(), truncated))
    }
}
