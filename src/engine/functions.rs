//! Function registration (versioned by content hash) and lookup.

use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::ids::{EnvId, FunctionId};
use crate::store::functions::{
    FunctionQuery, FunctionRecord, FunctionRegistration, RegisterOutcome,
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
        let outcome = self.store().register_function(&registration).await?;
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
