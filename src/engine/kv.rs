//! The KV store's domain operations: buckets, conditional writes, reads, listings, history.
//! Two backends behind one trait ([`KvStore`]): the database (the default; expired values are
//! invisible at once and removed by the timer sweep) and NATS JetStream KV (`--nats-url`).

use crate::domain::kv::{BucketSettings, KvCondition, key_filter, validate_bucket, validate_key};
use crate::ids::EnvId;
use crate::store::kv::{BucketRecord, InBucket, KvEntry, KvWrite, KvWriteOutcome};
use crate::store::kv_nats::NatsKv;

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

/// A bucket-scoped answer: the value, or 404 naming the bucket.
fn in_bucket<T>(found: InBucket<T>, bucket: &str) -> Result<T, EngineError> {
    match found {
        InBucket::Found(value) => Ok(value),
        InBucket::NoSuchBucket => Err(EngineError::not_found("bucket", bucket)),
    }
}

impl Engine {
    pub async fn kv_create_bucket(
        &self,
        env: &EnvId,
        settings: BucketSettings,
    ) -> Result<BucketRecord, EngineError> {
        settings.validate().map_err(EngineError::InvalidArgument)?;
        if !self.kv().kv_create_bucket(env, &settings).await? {
            return Err(EngineError::AlreadyExists(format!(
                "bucket '{}' already exists",
                settings.name
            )));
        }
        self.kv_bucket(env, &settings.name).await
    }

    pub async fn kv_bucket(&self, env: &EnvId, name: &str) -> Result<BucketRecord, EngineError> {
        validate_bucket(name).map_err(invalid)?;
        self.kv()
            .kv_buckets(env, Some(name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::not_found("bucket", name))
    }

    pub async fn kv_list_buckets(&self, env: &EnvId) -> Result<Vec<BucketRecord>, EngineError> {
        Ok(self.kv().kv_buckets(env, None).await?)
    }

    pub async fn kv_delete_bucket(&self, env: &EnvId, name: &str) -> Result<(), EngineError> {
        validate_bucket(name).map_err(invalid)?;
        if self.kv().kv_delete_bucket(env, name).await? {
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
        match self.kv().kv_write(&write).await? {
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
        in_bucket(self.kv().kv_get(env, bucket, key).await?, bucket)?
            .ok_or_else(|| EngineError::not_found("key", key))
    }

    /// Removes a key and its whole history.
    pub async fn kv_purge(&self, env: &EnvId, bucket: &str, key: &str) -> Result<(), EngineError> {
        validate_key(key).map_err(invalid)?;
        validate_bucket(bucket).map_err(invalid)?;
        in_bucket(self.kv().kv_purge(env, bucket, key).await?, bucket)
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
        let keys = in_bucket(self.kv().kv_keys(env, bucket).await?, bucket)?;
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
        validate_bucket(bucket).map_err(invalid)?;
        in_bucket(self.kv().kv_history(env, bucket, key).await?, bucket)
    }
}
