//! Functions in the store: versioned registration (a new version only when the definition's
//! content hash changed, each version kept), reads.

use async_trait::async_trait;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::append_history;
use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::domain::function_history::FunctionEntry;
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::lifecycle::control::Actor;
use crate::domain::time::Ts;
use crate::ids::{EnvId, FunctionId};

#[async_trait]
pub trait FunctionStore: Send + Sync {
    /// Stores a function definition; a new version only when its content hash changed.
    async fn register_function(
        &self,
        registration: &FunctionRegistration,
    ) -> Result<RegisterOutcome, StoreError>;

    async fn get_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<Option<FunctionRecord>, StoreError>;

    async fn list_functions(
        &self,
        env: &EnvId,
        query: &FunctionQuery,
    ) -> Result<Vec<FunctionRecord>, StoreError>;

    /// Every active function of the environment (trigger matching reads them on each emit).
    async fn active_functions(&self, env: &EnvId) -> Result<Vec<FunctionRecord>, StoreError>;

    /// Sets a function's status with its history entry; `None` when there is no such function.
    async fn set_function_status(
        &self,
        env: &EnvId,
        id: &FunctionId,
        status: FunctionStatus,
        actor: &Actor,
    ) -> Result<Option<FunctionRecord>, StoreError>;

    /// Deletes a function and its stored versions (the history keeps every definition); refused
    /// while it has unfinished runs.
    async fn delete_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        actor: &Actor,
    ) -> Result<DeleteFunctionOutcome, StoreError>;

    /// The function's `function.*` history entries, oldest first.
    async fn function_history(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<Vec<FunctionEntry>, StoreError>;

    /// Makes the definition of `version` current again, as a new version.
    async fn rollback_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        version: i32,
        actor: &Actor,
    ) -> Result<RollbackOutcome, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteFunctionOutcome {
    Deleted,
    NotFound,
    /// It still has this many unfinished runs.
    HasUnfinishedRuns(i64),
}

#[derive(Debug, Clone)]
pub enum RollbackOutcome {
    RolledBack(FunctionRecord),
    FunctionNotFound,
    VersionNotFound,
    /// The version asked for is the current definition already.
    AlreadyCurrent(FunctionRecord),
}

#[derive(sqlx::FromRow)]
struct FunctionEntryRow {
    seq: i64,
    recorded_at: Ts,
    kind: String,
    payload: Json<serde_json::Value>,
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

#[derive(Debug, Clone, Default)]
pub struct FunctionQuery {
    pub status: Option<FunctionStatus>,
    pub after_id: Option<String>,
    pub limit: i64,
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

impl TryFrom<FunctionRow> for FunctionRecord {
    type Error = StoreError;

    fn try_from(r: FunctionRow) -> Result<Self, Self::Error> {
        let status = FunctionStatus::parse(&r.status).ok_or_else(|| {
            StoreError::Corrupt(format!("function {}: status '{}'", r.id, r.status))
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

/// The version and hash of a function, read under its row lock.
#[derive(sqlx::FromRow)]
struct CurrentVersion {
    version: i32,
    definition_hash: String,
}

pub(crate) async fn select_function<C: Conn + ?Sized>(
    conn: &mut C,
    env: &EnvId,
    id: &FunctionId,
) -> Result<Option<FunctionRecord>, StoreError> {
    let row: Option<FunctionRow> = conn
        .fetch_optional(sql!("get_function"), args![env.as_str(), id.as_str()])
        .await?;
    row.map(FunctionRecord::try_from).transpose()
}

impl<D: Db> SqlStore<D> {
    async fn try_register_function(
        &self,
        reg: &FunctionRegistration,
    ) -> Result<RegisterOutcome, StoreError> {
        let now = Ts::now();
        let hash = reg.definition.content_hash();
        let definition = serde_json::to_value(&reg.definition)
            .map_err(|e| StoreError::Internal(format!("encoding a definition: {e}")))?;
        let mut tx = self.db.begin().await?;
        let current: Option<CurrentVersion> = tx
            .fetch_optional(
                sql!("lock_function"),
                args![reg.env_id.as_str(), reg.id.as_str()],
            )
            .await?;
        let version = match current {
            Some(current) if current.definition_hash == hash => {
                let function = select_function(&mut *tx, &reg.env_id, &reg.id)
                    .await?
                    .ok_or_else(|| StoreError::Internal("function vanished under lock".into()))?;
                D::commit(tx).await?;
                return Ok(RegisterOutcome {
                    function,
                    created: false,
                    new_version: false,
                });
            }
            Some(current) => {
                let next = current.version + 1;
                tx.execute(
                    sql!("update_function"),
                    args![
                        reg.env_id.as_str(),
                        reg.id.as_str(),
                        &reg.definition.name,
                        next,
                        &definition,
                        &hash,
                        now,
                    ],
                )
                .await?;
                next
            }
            None => {
                tx.execute(
                    sql!("insert_function"),
                    args![
                        reg.env_id.as_str(),
                        reg.id.as_str(),
                        &reg.definition.name,
                        &definition,
                        &hash,
                        now,
                    ],
                )
                .await?;
                1
            }
        };
        tx.execute(
            sql!("insert_function_version"),
            args![
                reg.env_id.as_str(),
                reg.id.as_str(),
                version,
                &definition,
                &hash,
                now,
            ],
        )
        .await?;
        let entry = NewHistoryEntry {
            env_id: reg.env_id.clone(),
            kind: HistoryKind::FunctionRegistered,
            run_id: None,
            function_id: Some(reg.id.clone()),
            event_id: None,
            payload: serde_json::json!({
                "version": version,
                "definition_hash": hash,
                "change_reason": reg.change_reason,
                "definition": definition,
            }),
        };
        append_history(&mut *tx, &entry, now).await?;
        let function = select_function(&mut *tx, &reg.env_id, &reg.id)
            .await?
            .ok_or_else(|| StoreError::Internal("function missing after write".into()))?;
        D::commit(tx).await?;
        Ok(RegisterOutcome {
            function,
            created: version == 1,
            new_version: true,
        })
    }
}

#[async_trait]
impl<D: Db> FunctionStore for SqlStore<D> {
    async fn register_function(
        &self,
        reg: &FunctionRegistration,
    ) -> Result<RegisterOutcome, StoreError> {
        // Two first registrations racing both see "absent"; the loser's insert hits the
        // primary key and is retried, then sees the winner's row.
        let mut attempt = 0;
        loop {
            match self.try_register_function(reg).await {
                Err(StoreError::Conflict(_)) if attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn get_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        select_function(&mut *self.db.reader().await?, env, id).await
    }

    async fn list_functions(
        &self,
        env: &EnvId,
        query: &FunctionQuery,
    ) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows: Vec<FunctionRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("list_functions"),
                args![
                    env.as_str(),
                    query.status.map(FunctionStatus::as_str),
                    query.after_id.as_deref(),
                    query.limit,
                ],
            )
            .await?;
        rows.into_iter().map(FunctionRecord::try_from).collect()
    }

    async fn active_functions(&self, env: &EnvId) -> Result<Vec<FunctionRecord>, StoreError> {
        let rows: Vec<FunctionRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("active_functions"), args![env.as_str()])
            .await?;
        rows.into_iter().map(FunctionRecord::try_from).collect()
    }

    async fn set_function_status(
        &self,
        env: &EnvId,
        id: &FunctionId,
        status: FunctionStatus,
        actor: &Actor,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let locked: Option<CurrentVersion> = tx
            .fetch_optional(sql!("lock_function"), args![env.as_str(), id.as_str()])
            .await?;
        if locked.is_none() {
            return Ok(None);
        }
        let before = select_function(&mut *tx, env, id)
            .await?
            .ok_or_else(|| StoreError::Internal("function vanished under lock".into()))?;
        if before.status == status {
            D::commit(tx).await?;
            return Ok(Some(before));
        }
        tx.execute(
            sql!("set_function_status"),
            args![env.as_str(), id.as_str(), status.as_str(), now],
        )
        .await?;
        let entry = function_entry(
            env,
            id,
            HistoryKind::FunctionStatusChanged,
            serde_json::json!({
                "from": before.status.as_str(), "status": status.as_str(), "version": before.version,
                "actor_id": actor.key_id, "change_reason": actor.reason,
            }),
        );
        append_history(&mut *tx, &entry, now).await?;
        let after = select_function(&mut *tx, env, id).await?;
        D::commit(tx).await?;
        Ok(after)
    }

    async fn delete_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        actor: &Actor,
    ) -> Result<DeleteFunctionOutcome, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let locked: Option<CurrentVersion> = tx
            .fetch_optional(sql!("lock_function"), args![env.as_str(), id.as_str()])
            .await?;
        let Some(current) = locked else {
            return Ok(DeleteFunctionOutcome::NotFound);
        };
        let unfinished: i64 = tx
            .scalar(
                sql!("count_unfinished_runs_of_function"),
                args![env.as_str(), id.as_str()],
            )
            .await?;
        if unfinished > 0 {
            return Ok(DeleteFunctionOutcome::HasUnfinishedRuns(unfinished));
        }
        tx.execute(
            sql!("delete_function_versions"),
            args![env.as_str(), id.as_str()],
        )
        .await?;
        tx.execute(sql!("delete_function"), args![env.as_str(), id.as_str()])
            .await?;
        let entry = function_entry(
            env,
            id,
            HistoryKind::FunctionDeleted,
            serde_json::json!({
                "version": current.version, "definition_hash": current.definition_hash,
                "actor_id": actor.key_id, "change_reason": actor.reason,
            }),
        );
        append_history(&mut *tx, &entry, now).await?;
        D::commit(tx).await?;
        Ok(DeleteFunctionOutcome::Deleted)
    }

    async fn function_history(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<Vec<FunctionEntry>, StoreError> {
        let rows: Vec<FunctionEntryRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("function_history"), args![env.as_str(), id.as_str()])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| FunctionEntry {
                seq: r.seq,
                recorded_at: r.recorded_at,
                kind: r.kind,
                payload: r.payload.0,
            })
            .collect())
    }

    async fn rollback_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        version: i32,
        actor: &Actor,
    ) -> Result<RollbackOutcome, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let locked: Option<CurrentVersion> = tx
            .fetch_optional(sql!("lock_function"), args![env.as_str(), id.as_str()])
            .await?;
        let Some(current) = locked else {
            return Ok(RollbackOutcome::FunctionNotFound);
        };
        let stored: Option<Json<FunctionDefinition>> = tx
            .scalar_optional(
                sql!("function_version_definition"),
                args![env.as_str(), id.as_str(), version],
            )
            .await?;
        let Some(Json(definition)) = stored else {
            return Ok(RollbackOutcome::VersionNotFound);
        };
        let hash = definition.content_hash();
        if hash == current.definition_hash {
            let function = select_function(&mut *tx, env, id)
                .await?
                .ok_or_else(|| StoreError::Internal("function vanished under lock".into()))?;
            D::commit(tx).await?;
            return Ok(RollbackOutcome::AlreadyCurrent(function));
        }
        let next = current.version + 1;
        let json = serde_json::to_value(&definition)
            .map_err(|e| StoreError::Internal(format!("encoding a definition: {e}")))?;
        tx.execute(
            sql!("update_function"),
            args![
                env.as_str(),
                id.as_str(),
                &definition.name,
                next,
                &json,
                &hash,
                now
            ],
        )
        .await?;
        tx.execute(
            sql!("insert_function_version"),
            args![env.as_str(), id.as_str(), next, &json, &hash, now],
        )
        .await?;
        let entry = function_entry(
            env,
            id,
            HistoryKind::FunctionRolledBack,
            serde_json::json!({
                "version": next, "from_version": version, "definition_hash": hash,
                "definition": json, "actor_id": actor.key_id, "change_reason": actor.reason,
            }),
        );
        append_history(&mut *tx, &entry, now).await?;
        let function = select_function(&mut *tx, env, id)
            .await?
            .ok_or_else(|| StoreError::Internal("function missing after write".into()))?;
        D::commit(tx).await?;
        Ok(RollbackOutcome::RolledBack(function))
    }
}

fn function_entry(
    env: &EnvId,
    id: &FunctionId,
    kind: HistoryKind,
    payload: serde_json::Value,
) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind,
        run_id: None,
        function_id: Some(id.clone()),
        event_id: None,
        payload,
    }
}
