//! What the server says about itself and who is calling: database health, the backend, an
//! environment's counts.

use super::{Engine, EngineError};
use crate::ids::EnvId;
use crate::store::Backend;
use crate::store::messages::StoredMessage;
use crate::store::runs::EnvCounts;

impl Engine {
    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), EngineError> {
        Ok(self.store().ping().await?)
    }

    /// Which database this server runs on.
    pub fn backend(&self) -> Backend {
        self.store().backend()
    }

    /// How many functions, runs and events an environment holds.
    pub async fn env_counts(&self, env: &EnvId) -> Result<EnvCounts, EngineError> {
        Ok(self.store().env_counts(env).await?)
    }

    /// The newest history sequence: a system subscription follows everything after it.
    pub async fn latest_history_seq(&self) -> Result<i64, EngineError> {
        Ok(self.store().max_history_seq().await?)
    }

    /// Topic messages newest first, for a subscription's replay.
    pub async fn recent_messages(
        &self,
        env: &EnvId,
        after_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, EngineError> {
        Ok(self.store().recent_messages(env, after_seq, limit).await?)
    }
}
