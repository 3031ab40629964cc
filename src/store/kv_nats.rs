//! The NATS JetStream KV backend (`--nats-url`): each bucket is a `KV_<name>` stream that
//! ironflow creates itself (Debian's nats-server 2.9 refuses async-nats' `create_key_value`),
//! read through async-nats' KV API and written with raw publishes, so every write returns
//! its revision (the stream sequence) and conditions are checked by the server
//! (`Nats-Expected-Last-Subject-Sequence`).
//!
//! Names are scoped per environment: bucket `orders` of environment id `0193…-7c` is the NATS
//! bucket `if_<env id, letters and digits only>_orders`, i.e. the stream
//! `KV_if_0193…7c_orders` with subjects `$KV.if_0193…7c_orders.>`. The description and
//! `max_value_size`, which NATS streams have no place for, are kept as JSON in the stream's
//! description (`max_bytes` is checked against the stream's stored bytes, which include
//! NATS's per-message overhead).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::kv::{
    BucketRecord, InBucket, KvEntry, KvStore, KvWatchEnd, KvWatchEvent, KvWatchStream, KvWrite,
    KvWriteOutcome,
};
use crate::domain::kv::{BucketSettings, KvCondition};
use crate::domain::time::Ts;
use crate::ids::EnvId;

/// A connection to a NATS server with JetStream, serving the KV API.
#[derive(Clone)]
pub struct NatsKv {
    js: jetstream::Context,
}

impl std::fmt::Debug for NatsKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKv").finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("NATS KV {what}: {e}"))
}

/// What ironflow keeps in the stream's description.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Meta {
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_value_size: i64,
    #[serde(default)]
    max_bytes: i64,
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> Ts {
    Ts(t)
}

fn entry(e: kv::Entry) -> KvEntry {
    KvEntry {
        key: e.key,
        revision: i64::try_from(e.revision).unwrap_or(i64::MAX),
        deleted: e.operation != kv::Operation::Put,
        value: if e.operation == kv::Operation::Put {
            e.value.to_vec()
        } else {
            Vec::new()
        },
        created_at: ts(e.created),
    }
}

impl NatsKv {
    /// Connects (failing at once, with the URL in the message, when the server is unreachable)
    /// and checks that JetStream is enabled.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url} (--nats-url / NATS_URL)"))?;
        let no_js = || {
            format!(
                "NATS at {url} answered, but JetStream is not enabled (start nats-server with -js)"
            )
        };
        // The account info request (raw: its reply's shape differs across server versions).
        let reply = client
            .request("$JS.API.INFO", bytes::Bytes::new())
            .await
            .with_context(no_js)?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload).with_context(no_js)?;
        if let Some(error) = info.get("error") {
            anyhow::bail!("{}: {error}", no_js());
        }
        Ok(Self {
            js: jetstream::new(client),
        })
    }

    /// Writes `value` under `key` in a server-owned bucket (`SYS_…`, not scoped to an
    /// environment, one revision per key), creating the bucket on first use.
    pub async fn put_system(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable("creating a system bucket", e))?;
        self.js
            .publish(format!("$KV.{bucket}.{key}"), value.into())
            .await
            .map_err(|e| unavailable("writing a system bucket", e))?
            .await
            .map_err(|e| unavailable("writing a system bucket", e))?;
        Ok(())
    }

    /// The underlying connection (shared with the live fan-out).
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// The NATS bucket name of `bucket` in `env`.
    pub fn nats_bucket(env: &EnvId, bucket: &str) -> String {
        format!("{}{bucket}", Self::env_prefix(env))
    }

    fn env_prefix(env: &EnvId) -> String {
        let token: String = env
            .as_str()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("if_{token}_")
    }

    fn stream_name(env: &EnvId, bucket: &str) -> String {
        format!("KV_{}", Self::nats_bucket(env, bucket))
    }

    /// The bucket's KV handle, `None` when it does not exist.
    async fn store(&self, env: &EnvId, bucket: &str) -> Result<Option<kv::Store>, StoreError> {
        match self.js.get_stream(Self::stream_name(env, bucket)).await {
            Ok(_) => {}
            Err(e) => {
                return match e.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(None)
                    }
                    _ => Err(unavailable("reading the bucket", e)),
                };
            }
        }
        self.js
            .get_key_value(Self::nats_bucket(env, bucket))
            .await
            .map(Some)
            .map_err(|e| unavailable("opening the bucket", e))
    }

    fn record(env: &EnvId, info: &stream::Info) -> Option<BucketRecord> {
        let c = &info.config;
        let name = c
            .name
            .strip_prefix("KV_")?
            .strip_prefix(&Self::env_prefix(env))?;
        let meta: Meta = c
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        Some(BucketRecord {
            settings: BucketSettings {
                name: name.to_owned(),
                description: meta.description,
                ttl_seconds: i64::try_from(c.max_age.as_secs()).unwrap_or(i64::MAX),
                max_value_size: meta.max_value_size,
                max_bytes: meta.max_bytes,
                history: i32::try_from(c.max_messages_per_subject.max(1)).unwrap_or(i32::MAX),
            },
            created_at: ts(info.created),
            values: i64::try_from(info.state.messages).unwrap_or(i64::MAX),
            bytes: i64::try_from(info.state.bytes).unwrap_or(i64::MAX),
        })
    }

    /// The key's newest entry (a value or a tombstone), if any is kept.
    async fn newest(store: &kv::Store, key: &str) -> Result<Option<kv::Entry>, StoreError> {
        store
            .entry(key)
            .await
            .map_err(|e| unavailable("reading a key", e))
    }
}

#[async_trait]
impl KvStore for NatsKv {
    async fn kv_create_bucket(&self, env: &EnvId, b: &BucketSettings) -> Result<bool, StoreError> {
        if self.store(env, &b.name).await?.is_some() {
            return Ok(false);
        }
        let name = Self::nats_bucket(env, &b.name);
        let meta = Meta {
            description: b.description.clone(),
            max_value_size: b.max_value_size,
            max_bytes: b.max_bytes,
        };
        let max_age = Duration::from_secs(u64::try_from(b.ttl_seconds).unwrap_or(0));
        let config = stream::Config {
            name: format!("KV_{name}"),
            description: Some(json!(meta).to_string()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: i64::from(b.history.max(1)),
            // `max_bytes` is checked before publishing against the stream's stored bytes (NATS
            // counts subject and headers too, so a server-side limit would refuse values the
            // database backend accepts).
            max_bytes: -1,
            max_age,
            // A backstop only: the exact limit is checked before publishing.
            max_message_size: if b.max_value_size > 0 {
                i32::try_from(b.max_value_size.saturating_add(4096)).unwrap_or(i32::MAX)
            } else {
                -1
            },
            storage: stream::StorageType::File,
            num_replicas: 1,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            // NATS refuses a duplicate window longer than `max_age`.
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            ..Default::default()
        };
        self.js
            .create_stream(config)
            .await
            .map_err(|e| unavailable("creating the bucket", e))?;
        Ok(true)
    }

    async fn kv_buckets(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<BucketRecord>, StoreError> {
        let names: Vec<String> = match name {
            Some(n) => vec![Self::stream_name(env, n)],
            None => {
                let prefix = format!("KV_{}", Self::env_prefix(env));
                let mut all = self.js.stream_names();
                let mut names = Vec::new();
                while let Some(n) = all.next().await {
                    let n = n.map_err(|e| unavailable("listing buckets", e))?;
                    if n.starts_with(&prefix) {
                        names.push(n);
                    }
                }
                names.sort();
                names
            }
        };
        let mut out = Vec::new();
        for n in names {
            match self.js.get_stream(&n).await {
                Ok(mut s) => {
                    let info = s
                        .info()
                        .await
                        .map_err(|e| unavailable("reading a bucket", e))?;
                    out.extend(Self::record(env, info));
                }
                Err(e) => match e.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                    _ => return Err(unavailable("reading a bucket", e)),
                },
            }
        }
        Ok(out)
    }

    async fn kv_delete_bucket(&self, env: &EnvId, name: &str) -> Result<bool, StoreError> {
        if self.store(env, name).await?.is_none() {
            return Ok(false);
        }
        self.js
            .delete_stream(Self::stream_name(env, name))
            .await
            .map_err(|e| unavailable("deleting the bucket", e))?;
        Ok(true)
    }

    async fn kv_write(&self, w: &KvWrite) -> Result<KvWriteOutcome, StoreError> {
        let Some(store) = self.store(&w.env_id, &w.bucket).await? else {
            return Ok(KvWriteOutcome::NoSuchBucket);
        };
        let info = store.stream.cached_info();
        let meta: Meta = info
            .config
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        if let Some(v) = &w.value {
            if meta.max_value_size > 0 && v.len() as i64 > meta.max_value_size {
                return Ok(KvWriteOutcome::TooLarge {
                    size: v.len(),
                    limit: meta.max_value_size,
                });
            }
            let max_bytes = meta.max_bytes;
            let used = i64::try_from(info.state.bytes).unwrap_or(i64::MAX);
            if max_bytes > 0 && used + v.len() as i64 > max_bytes {
                return Ok(KvWriteOutcome::BucketFull {
                    used,
                    limit: max_bytes,
                });
            }
        }
        // The condition is checked here for a clear answer, and again by the server
        // (expected last subject sequence), which makes it atomic.
        let expected: Option<u64> = match w.condition {
            KvCondition::None => None,
            KvCondition::Absent => match Self::newest(&store, &w.key).await? {
                Some(e) if e.operation == kv::Operation::Put => {
                    return Ok(KvWriteOutcome::ConditionFailed {
                        current: i64::try_from(e.revision).unwrap_or(i64::MAX),
                    });
                }
                Some(e) => Some(e.revision),
                None => Some(0),
            },
            KvCondition::Revision(want) => match Self::newest(&store, &w.key).await? {
                Some(e) if e.operation == kv::Operation::Put => {
                    if i64::try_from(e.revision).ok() != Some(want) {
                        return Ok(KvWriteOutcome::ConditionFailed {
                            current: i64::try_from(e.revision).unwrap_or(i64::MAX),
                        });
                    }
                    Some(e.revision)
                }
                _ => return Ok(KvWriteOutcome::ConditionFailed { current: 0 }),
            },
        };
        let mut headers = HeaderMap::new();
        if let Some(seq) = expected {
            headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string());
        }
        if w.value.is_none() {
            headers.insert("KV-Operation", "DEL");
        }
        let payload = w.value.clone().unwrap_or_default();
        let subject = format!("{}{}", store.prefix, w.key);
        let ack = match self
            .js
            .publish_with_headers(subject, headers, payload.clone().into())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => Ok(KvWriteOutcome::Written(KvEntry {
                key: w.key.clone(),
                revision: i64::try_from(ack.sequence).unwrap_or(i64::MAX),
                deleted: w.value.is_none(),
                value: payload,
                created_at: Ts::now(),
            })),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let current = Self::newest(&store, &w.key)
                    .await?
                    .filter(|e| e.operation == kv::Operation::Put)
                    .map_or(0, |e| i64::try_from(e.revision).unwrap_or(i64::MAX));
                Ok(KvWriteOutcome::ConditionFailed { current })
            }
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                Ok(KvWriteOutcome::NoSuchBucket)
            }
            Err(e) => Err(unavailable("writing a key", e)),
        }
    }

    async fn kv_get(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Option<KvEntry>>, StoreError> {
        let Some(store) = self.store(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        Ok(InBucket::Found(
            Self::newest(&store, key)
                .await?
                .filter(|e| e.operation == kv::Operation::Put)
                .map(entry),
        ))
    }

    /// Removes every kept revision of a key (no marker is left).
    async fn kv_purge(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<()>, StoreError> {
        let Some(store) = self.store(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        store
            .stream
            .purge()
            .filter(format!("{}{key}", store.prefix))
            .await
            .map_err(|e| unavailable("purging a key", e))?;
        Ok(InBucket::Found(()))
    }

    async fn kv_keys(
        &self,
        env: &EnvId,
        bucket: &str,
    ) -> Result<InBucket<Vec<String>>, StoreError> {
        let Some(store) = self.store(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        let mut keys = store
            .keys()
            .await
            .map_err(|e| unavailable("listing keys", e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            out.push(k.map_err(|e| unavailable("listing keys", e))?);
        }
        out.sort();
        Ok(InBucket::Found(out))
    }

    async fn kv_history(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Vec<KvEntry>>, StoreError> {
        let Some(store) = self.store(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        let mut entries = store
            .history(key)
            .await
            .map_err(|e| unavailable("reading key history", e))?;
        let mut out = Vec::new();
        while let Some(e) = entries.next().await {
            let e = e.map_err(|e| unavailable("reading key history", e))?;
            if e.operation != kv::Operation::Purge {
                out.push(entry(e));
            }
        }
        Ok(InBucket::Found(out))
    }

    /// The newest value of every key (filtered by a NATS wildcard pattern), then every later
    /// put and delete, in stream order.
    async fn kv_watch(
        &self,
        env: &EnvId,
        bucket: &str,
        filter: Option<&str>,
        _changes: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Result<InBucket<KvWatchStream>, StoreError> {
        let Some(mut store) = self.store(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        let start = store
            .stream
            .info()
            .await
            .map_err(|e| unavailable("reading the bucket", e))?
            .state
            .last_sequence;
        let mut entries = store
            .watch_with_history(filter.unwrap_or(">"))
            .await
            .map_err(|e| unavailable("watching the bucket", e))?;
        let (tx, rx) = mpsc::channel(256);
        let bucket = bucket.to_owned();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = entries.next() => next,
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                };
                let event = match next {
                    None => Err(KvWatchEnd::Failed(unavailable(
                        "watch",
                        "the NATS subscription ended",
                    ))),
                    Some(Err(e)) => Err(KvWatchEnd::Failed(unavailable("watch", e))),
                    // The first values are the keys' newest; deleted keys are not news.
                    Some(Ok(e)) if e.operation != kv::Operation::Put && e.revision <= start => {
                        continue;
                    }
                    Some(Ok(e)) if e.operation == kv::Operation::Purge => continue,
                    Some(Ok(e)) => Ok(KvWatchEvent {
                        bucket: bucket.clone(),
                        entry: entry(e),
                    }),
                };
                let failed = event.is_err();
                if tx.send(event).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(InBucket::Found(rx))
    }

    /// NATS expires values itself (the stream's `max_age`).
    async fn kv_expire(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
