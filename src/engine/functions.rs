//! Function registration (versioned by content hash), lookup, status, deletion, history and
//! rollback.

use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::domain::function_history::{self, FunctionChange};
use crate::domain::lifecycle::control::Actor;
use crate::ids::{EnvId, FunctionId};
use crate::store::functions::{
    DeleteFunctionOutcome, FunctionQuery, FunctionRecord, FunctionRegistration, RegisterOutcome,
    RollbackOutcome,
};

use super::{Engine, EngineError, page_limit};

/// A registration as a transport parsed it.
#[derive(Debug, Clone)]
pub struct RegisterFunction {
    pub id: FunctionId,
    pub definition: FunctionDefinition,
    pub change_reason: String,
}

/// One page of functions, ordered by id.
#[derive(Debug, Clone)]
pub struct FunctionPage {
    pub functions: Vec<FunctionRecord>,
    pub next_cursor: Option<String>,
}

impl Engine {
    pub async fn register_function(
        &self,
        env: &EnvId,
        mut request: RegisterFunction,
    ) -> Result<RegisterOutcome, EngineError> {
        if request.definition.name.trim().is_empty() {
            request.definition.name = request.id.to_string();
        }
        request
            .definition
            .validate()
            .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        let push = request.definition.mode == crate::domain::function::ExecutionMode::Push;
        let registration = FunctionRegistration {
            env_id: env.clone(),
            id: request.id,
            definition: request.definition,
            change_reason: request.change_reason,
        };
        let env_id = registration.env_id.clone();
        let function_id = registration.id.clone();
        let outcome = self.store().register_function(&registration).await?;
        self.sync_cron(&env_id, &function_id).await?;
        if push {
            self.inner
                .push_registered
                .store(true, std::sync::atomic::Ordering::Release);
            self.bus().work_ready();
        }
        self.bus().history_appended();
        Ok(outcome)
    }

    pub async fn get_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
    ) -> Result<FunctionRecord, EngineError> {
        self.store()
            .get_function(env, id)
            .await?
            .ok_or_else(|| EngineError::not_found("function", id))
    }

    /// Functions ordered by id; the cursor is the last id of the previous page.
    pub async fn list_functions(
        &self,
        env: &EnvId,
        status: Option<FunctionStatus>,
        cursor: Option<String>,
        limit: Option<i64>,
    ) -> Result<FunctionPage, EngineError> {
        let limit = page_limit(limit)?;
        let after_id = cursor.map(|c| super::cursor::decode(&c, "f")).transpose()?;
        let mut functions = self
            .store()
            .list_functions(
                env,
                &FunctionQuery {
                    status,
                    after_id,
                    limit: limit + 1,
                },
            )
            .await?;
        let next_cursor = if functions.len() as i64 > limit {
            functions.truncate(limit as usize);
            functions
                .last()
                .map(|f| super::cursor::encode("f", f.id.as_str()))
        } else {
            None
        };
        Ok(FunctionPage {
            functions,
            next_cursor,
        })
    }
}

/// A page of a function's history.
#[derive(Debug, Clone)]
pub struct FunctionHistoryPage {
    pub entries: Vec<FunctionChange>,
    pub has_more: bool,
}

impl Engine {
    /// Pause, activate or archive a function. A paused or archived function starts no runs
    /// for new events; its unfinished runs go on.
    pub async fn update_function_status(
        &self,
        env: &EnvId,
        id: &FunctionId,
        status: FunctionStatus,
        actor: &Actor,
    ) -> Result<FunctionRecord, EngineError> {
        let function = self
            .store()
            .set_function_status(env, id, status, actor)
            .await?
            .ok_or_else(|| EngineError::not_found("function", id))?;
        self.sync_cron(env, id).await?;
        self.bus().history_appended();
        Ok(function)
    }

    pub async fn delete_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        match self.store().delete_function(env, id, actor).await? {
            DeleteFunctionOutcome::Deleted => {
                self.sync_cron(env, id).await?;
                self.bus().history_appended();
                Ok(())
            }
            DeleteFunctionOutcome::NotFound => Err(EngineError::not_found("function", id)),
            DeleteFunctionOutcome::HasUnfinishedRuns(n) => {
                Err(EngineError::FailedPrecondition(format!(
                    "function '{id}' has {n} unfinished run(s); cancel them (or let them end) before deleting it"
                )))
            }
        }
    }

    /// The function's changes after `from_version` (exclusive; 0 = from the first), oldest
    /// first, at most `limit`.
    pub async fn function_history(
        &self,
        env: &EnvId,
        id: &FunctionId,
        from_version: i64,
        limit: Option<i64>,
    ) -> Result<FunctionHistoryPage, EngineError> {
        let limit = page_limit(limit)?;
        let all = function_history::changes(&self.store().function_history(env, id).await?);
        if all.is_empty() {
            return Err(EngineError::not_found("function", id));
        }
        let mut entries: Vec<FunctionChange> = all
            .into_iter()
            .filter(|c| c.entity_version > from_version)
            .collect();
        let has_more = entries.len() as i64 > limit;
        entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(FunctionHistoryPage { entries, has_more })
    }

    /// One change of the function by its `entity_version`.
    pub async fn function_at_version(
        &self,
        env: &EnvId,
        id: &FunctionId,
        entity_version: i64,
    ) -> Result<FunctionChange, EngineError> {
        function_history::changes(&self.store().function_history(env, id).await?)
            .into_iter()
            .find(|c| c.entity_version == entity_version)
            .ok_or_else(|| {
                EngineError::not_found("function version", format!("{id}@{entity_version}"))
            })
    }

    /// Makes definition `version` current again (as a new version).
    pub async fn rollback_function(
        &self,
        env: &EnvId,
        id: &FunctionId,
        version: i64,
        actor: &Actor,
    ) -> Result<FunctionRecord, EngineError> {
        let Ok(version) = i32::try_from(version) else {
            return Err(EngineError::InvalidArgument(format!(
                "version {version} is out of range"
            )));
        };
        match self
            .store()
            .rollback_function(env, id, version, actor)
            .await?
        {
            RollbackOutcome::RolledBack(f) => {
                self.sync_cron(env, id).await?;
                self.bus().history_appended();
                Ok(f)
            }
            RollbackOutcome::FunctionNotFound => Err(EngineError::not_found("function", id)),
            RollbackOutcome::VersionNotFound => Err(EngineError::not_found(
                "function version",
                format!("{id} version {version}"),
            )),
            RollbackOutcome::AlreadyCurrent(f) => Err(EngineError::FailedPrecondition(format!(
                "version {version} of function '{id}' is its current definition (version {})",
                f.version
            ))),
        }
    }
}
