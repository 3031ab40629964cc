//! Environment config (revisioned documents) and secrets (sealed under the master key,
//! write-only through the API, opened only to inject into the runs that declare them).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::domain::function::FunctionDefinition;
use crate::domain::kv::KvCondition;
use crate::domain::secret::validate_secret_name;
use crate::ids::EnvId;
use crate::store::config::{ConfigChange, ConfigOutcome, ConfigRecord, ConfigWrite};
use crate::store::secrets::SecretMeta;

use super::{Engine, EngineError};

/// Config names are single topic tokens (`system.config.<name>.updated`).
fn validate_config_name(name: &str) -> Result<(), EngineError> {
    validate_secret_name(name)
        .map_err(|e| EngineError::InvalidArgument(e.replacen("secret", "config", 1)))
}

const NO_MASTER_KEY: &str = "secrets need a master key: start the server with IRONFLOW_MASTER_KEY set to 32 random bytes as 64 hex characters (for example `openssl rand -hex 32`)";

impl Engine {
    /// Refuses to start when stored secrets were sealed with a different master key.
    pub async fn check_master_key(&self) -> Result<(), EngineError> {
        let ids = self.store().secret_key_ids().await?;
        match &self.options().master_key {
            Some(key) => {
                if let Some(other) = ids.iter().find(|id| *id != key.id()) {
                    return Err(EngineError::FailedPrecondition(format!(
                        "stored secrets were encrypted with master key {other}, but IRONFLOW_MASTER_KEY is {}; start with the key the secrets were stored under",
                        key.id()
                    )));
                }
            }
            None if !ids.is_empty() => {
                tracing::warn!(
                    "{} secret key(s) in the database but no IRONFLOW_MASTER_KEY: runs will not receive their secrets",
                    ids.len()
                );
            }
            None => {}
        }
        Ok(())
    }

    pub async fn config_write(
        &self,
        env: &EnvId,
        name: &str,
        change: ConfigChange,
        condition: KvCondition,
    ) -> Result<Option<ConfigRecord>, EngineError> {
        validate_config_name(name)?;
        let write = ConfigWrite {
            env_id: env.clone(),
            name: name.to_owned(),
            change,
            condition,
        };
        let outcome = self.store().config_write(&write).await?;
        self.bus().history_appended();
        match outcome {
            ConfigOutcome::Written(record) => Ok(Some(record)),
            ConfigOutcome::Deleted => Ok(None),
            ConfigOutcome::ConditionFailed { current: 0 } => Err(EngineError::ConditionFailed(
                format!("config '{name}' does not exist"),
            )),
            ConfigOutcome::ConditionFailed { current } => {
                Err(EngineError::ConditionFailed(match condition {
                    KvCondition::Absent => {
                        format!("config '{name}' already exists (revision {current})")
                    }
                    _ => format!("config '{name}' is at revision {current}"),
                }))
            }
        }
    }

    pub async fn config_get(&self, env: &EnvId, name: &str) -> Result<ConfigRecord, EngineError> {
        validate_config_name(name)?;
        self.store()
            .configs(env, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::not_found("config", name))
    }

    pub async fn config_list(&self, env: &EnvId) -> Result<Vec<ConfigRecord>, EngineError> {
        Ok(self.store().configs(env, None).await?)
    }

    fn master_key(&self) -> Result<&crate::domain::secret::MasterKey, EngineError> {
        self.options()
            .master_key
            .as_ref()
            .ok_or_else(|| EngineError::FailedPrecondition(NO_MASTER_KEY.into()))
    }

    pub async fn secret_create(
        &self,
        env: &EnvId,
        name: &str,
        value: &str,
        description: &str,
    ) -> Result<SecretMeta, EngineError> {
        validate_secret_name(name).map_err(EngineError::InvalidArgument)?;
        let sealed = self.master_key()?.seal(env.as_str(), name, value);
        if !self
            .store()
            .secret_create(env, name, description, &sealed)
            .await?
        {
            return Err(EngineError::AlreadyExists(format!(
                "secret '{name}' already exists; update it instead"
            )));
        }
        self.bus().history_appended();
        self.secret_meta(env, name).await
    }

    /// Replaces the value (when given) and/or the description.
    pub async fn secret_update(
        &self,
        env: &EnvId,
        name: &str,
        value: Option<&str>,
        description: Option<&str>,
    ) -> Result<SecretMeta, EngineError> {
        validate_secret_name(name).map_err(EngineError::InvalidArgument)?;
        let sealed = value
            .map(|v| self.master_key().map(|k| k.seal(env.as_str(), name, v)))
            .transpose()?;
        if !self
            .store()
            .secret_update(env, name, sealed.as_ref(), description)
            .await?
        {
            return Err(EngineError::not_found("secret", name));
        }
        self.bus().history_appended();
        self.secret_meta(env, name).await
    }

    pub async fn secret_delete(&self, env: &EnvId, name: &str) -> Result<(), EngineError> {
        validate_secret_name(name).map_err(EngineError::InvalidArgument)?;
        if self.store().secret_delete(env, name).await? {
            self.bus().history_appended();
            Ok(())
        } else {
            Err(EngineError::not_found("secret", name))
        }
    }

    pub async fn secret_meta(&self, env: &EnvId, name: &str) -> Result<SecretMeta, EngineError> {
        self.store()
            .secret_meta(env, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::not_found("secret", name))
    }

    pub async fn secret_list(&self, env: &EnvId) -> Result<Vec<SecretMeta>, EngineError> {
        Ok(self.store().secret_meta(env, None).await?)
    }

    /// The values of the secrets a function declares, and no other. A secret that cannot be
    /// opened is left out and logged (the start-up key check makes this an exceptional case).
    pub(crate) async fn secrets_for_run(
        &self,
        env: &EnvId,
        definition: Option<&FunctionDefinition>,
    ) -> BTreeMap<String, String> {
        let Some(names) = definition.map(|d| &d.secrets).filter(|s| !s.is_empty()) else {
            return BTreeMap::new();
        };
        let Some(key) = self.options().master_key.as_ref() else {
            tracing::error!("a run declares secrets but the server has no IRONFLOW_MASTER_KEY");
            return BTreeMap::new();
        };
        let sealed = match self.store().secret_sealed(env, names).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reading secrets for a run");
                return BTreeMap::new();
            }
        };
        let mut out = BTreeMap::new();
        for (name, s) in sealed {
            match key.open(env.as_str(), &name, &s) {
                Ok(value) => {
                    out.insert(name, value);
                }
                Err(e) => tracing::error!(error = %e, "cannot inject secret"),
            }
        }
        out
    }
}

/// A shallow-merge patch or full document must be a JSON object.
pub fn config_document(value: Value) -> Result<Map<String, Value>, EngineError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(EngineError::InvalidArgument(
            "a config document must be a JSON object".into(),
        )),
    }
}
