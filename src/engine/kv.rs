//! The KV store's domain operations: buckets, conditional writes, reads, listings, history.
//! Two backends behind one API: the database (the default; expired values are invisible at
//! once and removed by the timer sweep) and NATS JetStream KV (`--nats-url`, see
//! [`kv_nats`](super::kv_nats)).

use crate::domain::kv::{BucketSettings, KvCondition, key_filter, validate_bucket, validate_key};
use crate::ids::EnvId;
use crate::store::model::{BucketRecord, KvEntry, KvWrite, KvWriteOutcome};

use super::kv_nats::NatsKv;
use super::{Engine, EngineError};

/// Where KV buckets live.
#[derive(Debug, Clone, Default)]
pub enum KvBackend {
    /// The `kv_buckets` / `kv_entries` tables.
    #[default]
    Database,
    /// NATS JetStream KV, one stream per bucket, scoped per environment.
    Nats(NatsKv),
}

fn invalid<E: ToString>(e: E) -> EngineError {
    EngineError::InvalidArgument(e.to_string())
}

impl Engine {
    pub async fn kv_create_bucket(
        &self,
        env: &EnvId,
        settings: BucketSettings,
    ) -> Result<BucketRecord, EngineError> {
        settings.validate().map_err(EngineError::InvalidArgument)?;
        let created = match &self.options().kv {
            KvBackend::Database => self.store().kv_create_bucket(env, &settings).await?,
            KvBackend::Nats(nats) => nats.create_bucket(env, &settings).await?,
        };
        if !created {
            return Err(EngineError::AlreadyExists(format!(
                "bucket '{}' already exists",
                settings.name
            )));
        }
        self.kv_bucket(env, &settings.name).await
    }

    pub async fn kv_bucket(&self, env: &EnvId, name: &str) -> Result<BucketRecord, EngineError> {
        validate_bucket(name).map_err(invalid)?;
        let found = match &self.options().kv {
            KvBackend::Database => self.store().kv_buckets(env, Some(name)).await?,
            KvBackend::Nats(nats) => nats.buckets(env, Some(name)).await?,
        };
        found
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::not_found("bucket", name))
    }

    pub async fn kv_list_buckets(&self, env: &EnvId) -> Result<Vec<BucketRecord>, EngineError> {
        match &self.options().kv {
            KvBackend::Database => Ok(self.store().kv_buckets(env, None).await?),
            KvBackend::Nats(nats) => nats.buckets(env, None).await,
        }
    }

    pub async fn kv_delete_bucket(&self, env: &EnvId, name: &str) -> Result<(), EngineError> {
        validate_bucket(name).map_err(invalid)?;
        let deleted = match &self.options().kv {
            KvBackend::Database => self.store().kv_delete_bucket(env, name).await?,
            KvBackend::Nats(nats) => nats.delete_bucket(env, name).await?,
        };
        if deleted {
            // Its watchers end now rather than at their next sweep.
            self.bus().kv_changed();
            Ok(())
        } else {
            Err(EngineError::not_found("bucket", name))
        }
    }

    /// Writes a value (`Some`) or a tombstone (`None`) under a condition.
    pub async fn kv_write(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        condition: KvCondition,
    ) -> Result<KvEntry, EngineError> {
        validate_bucket(bucket).map_err(invalid)?;
        validate_key(key).map_err(invalid)?;
        let write = KvWrite {
            env_id: env.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            value,
            condition,
        };
        let outcome = match &self.options().kv {
            KvBackend::Database => self.store().kv_write(&write).await?,
            KvBackend::Nats(nats) => nats.write(&write).await?,
        };
        match outcome {
            KvWriteOutcome::Written(entry) => {
                // Local watchers read the new row (other nodes get the commit's NOTIFY).
                self.bus().kv_changed();
                Ok(entry)
            }
            KvWriteOutcome::NoSuchBucket => Err(EngineError::not_found("bucket", bucket)),
            KvWriteOutcome::ConditionFailed { current } => {
                Err(EngineError::ConditionFailed(match condition {
                    KvCondition::Absent => {
                        format!("key '{key}' already exists (revision {current})")
                    }
                    _ if current == 0 => format!("key '{key}' does not exist"),
                    _ => format!("key '{key}' is at revision {current}"),
                }))
            }
            KvWriteOutcome::BucketFull { used, limit } => Err(EngineError::PayloadTooLarge {
                what: "bucket (max_bytes) after this write; bytes used now",
                size: usize::try_from(used).unwrap_or(usize::MAX),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }),
            KvWriteOutcome::TooLarge { size, limit } => Err(EngineError::PayloadTooLarge {
                what: "value",
                size,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            }),
        }
    }

    pub async fn kv_get(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<KvEntry, EngineError> {
        validate_key(key).map_err(invalid)?;
        validate_bucket(bucket).map_err(invalid)?;
        let found = match &self.options().kv {
            KvBackend::Database => self.store().kv_get(env, bucket, key).await?,
            KvBackend::Nats(nats) => nats.get(env, bucket, key).await?,
        };
        match found {
            Some(entry) => Ok(entry),
            None => {
                self.kv_bucket(env, bucket).await?;
                Err(EngineError::not_found("key", key))
            }
        }
    }

    /// Removes a key and its whole history.
    pub async fn kv_purge(&self, env: &EnvId, bucket: &str, key: &str) -> Result<(), EngineError> {
        validate_key(key).map_err(invalid)?;
        if let KvBackend::Nats(nats) = &self.options().kv {
            validate_bucket(bucket).map_err(invalid)?;
            return nats.purge(env, bucket, key).await;
        }
        self.kv_bucket(env, bucket).await?;
        self.store().kv_purge(env, bucket, key).await?;
        Ok(())
    }

    pub async fn kv_keys(
        &self,
        env: &EnvId,
        bucket: &str,
        filter: Option<&str>,
    ) -> Result<Vec<String>, EngineError> {
        validate_bucket(bucket).map_err(invalid)?;
        let pattern = filter
            .map(key_filter)
            .transpose()
            .map_err(EngineError::InvalidArgument)?;
        let keys = match &self.options().kv {
            KvBackend::Database => {
                self.kv_bucket(env, bucket).await?;
                self.store().kv_keys(env, bucket).await?
            }
            KvBackend::Nats(nats) => nats.keys(env, bucket).await?,
        };
        Ok(keys
            .into_iter()
            .filter(|k| pattern.as_ref().is_none_or(|p| p.matches(k)))
            .collect())
    }

    pub async fn kv_history(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<KvEntry>, EngineError> {
        validate_key(key).map_err(invalid)?;
        if let KvBackend::Nats(nats) = &self.options().kv {
            validate_bucket(bucket).map_err(invalid)?;
            return nats.history(env, bucket, key).await;
        }
        self.kv_bucket(env, bucket).await?;
        Ok(self.store().kv_history(env, bucket, key).await?)
    }
}
