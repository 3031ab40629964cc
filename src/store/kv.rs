//! KV in the store: buckets, conditional writes, reads, history, TTL, watches — one trait,
//! [`KvStore`], served by the database (below) and by NATS JetStream
//! ([`super::kv_nats::NatsKv`], `--nats-url`).
//!
//! On the database, revisions come from a per-bucket counter taken under the bucket row's lock,
//! so they are strictly increasing per bucket and CAS is atomic under concurrent writers on both
//! backends. Each write NOTIFYs other nodes (`k`) so their watchers read the new rows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use crate::domain::kv::{BucketSettings, KvCondition, key_filter};
use crate::domain::pattern::EventPattern;
use crate::domain::time::Ts;
use crate::ids::EnvId;

/// The KV API, whichever backend holds the buckets.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// False when a bucket of that name exists.
    async fn kv_create_bucket(
        &self,
        env: &EnvId,
        bucket: &BucketSettings,
    ) -> Result<bool, StoreError>;

    /// The environment's buckets with their figures (one, when `name` is given).
    async fn kv_buckets(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<BucketRecord>, StoreError>;

    /// False when no such bucket exists.
    async fn kv_delete_bucket(&self, env: &EnvId, name: &str) -> Result<bool, StoreError>;

    /// A conditional put or delete; the revision is taken atomically with the condition check.
    async fn kv_write(&self, write: &KvWrite) -> Result<KvWriteOutcome, StoreError>;

    /// The key's live value (`None`: absent, deleted or expired).
    async fn kv_get(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Option<KvEntry>>, StoreError>;

    /// Removes a key and every kept revision of it.
    async fn kv_purge(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<()>, StoreError>;

    /// The keys holding a live value, sorted.
    async fn kv_keys(&self, env: &EnvId, bucket: &str)
    -> Result<InBucket<Vec<String>>, StoreError>;

    /// Every kept revision of a key, oldest first (tombstones included).
    async fn kv_history(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Vec<KvEntry>>, StoreError>;

    /// The newest value of every key matching `filter` (a NATS wildcard pattern over keys),
    /// then every later put and delete in revision order, until the receiver is dropped,
    /// `shutdown` fires, or the bucket is deleted (the stream then ends with
    /// [`KvWatchEnd::BucketDeleted`]). `changes` is notified after local writes and other
    /// nodes' NOTIFYs; a backend with its own change feed ignores it.
    async fn kv_watch(
        &self,
        env: &EnvId,
        bucket: &str,
        filter: Option<&str>,
        changes: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Result<InBucket<KvWatchStream>, StoreError>;

    /// Removes expired values (the timer's sweep); a backend that expires by itself does
    /// nothing.
    async fn kv_expire(&self) -> Result<u64, StoreError>;
}

/// A read or change of a bucket that may not exist.
#[derive(Debug)]
pub enum InBucket<T> {
    NoSuchBucket,
    Found(T),
}

/// A running watch's updates.
pub type KvWatchStream = mpsc::Receiver<Result<KvWatchEvent, KvWatchEnd>>;

/// One put or delete seen by a KV watch.
#[derive(Debug, Clone)]
pub struct KvWatchEvent {
    pub bucket: String,
    pub entry: KvEntry,
}

/// Why a watch ended early.
#[derive(Debug, thiserror::Error)]
pub enum KvWatchEnd {
    #[error("the bucket was deleted")]
    BucketDeleted,
    #[error(transparent)]
    Failed(#[from] StoreError),
}

/// A KV bucket with its usage.
#[derive(Debug, Clone)]
pub struct BucketRecord {
    pub settings: crate::domain::kv::BucketSettings,
    pub created_at: Ts,
    pub values: i64,
    pub bytes: i64,
}

/// One revision of a key.
#[derive(Debug, Clone)]
pub struct KvEntry {
    pub key: String,
    pub revision: i64,
    pub deleted: bool,
    pub value: Vec<u8>,
    pub created_at: Ts,
}

#[derive(Debug, Clone)]
pub struct KvWrite {
    pub env_id: EnvId,
    pub bucket: String,
    pub key: String,
    /// `None` writes a tombstone (delete).
    pub value: Option<Vec<u8>>,
    pub condition: crate::domain::kv::KvCondition,
}

#[derive(Debug, Clone)]
pub enum KvWriteOutcome {
    Written(KvEntry),
    NoSuchBucket,
    /// The condition did not hold; the key's latest revision (0 when absent).
    ConditionFailed {
        current: i64,
    },
    TooLarge {
        size: usize,
        limit: i64,
    },
    /// The bucket's `max_bytes` would be exceeded.
    BucketFull {
        used: i64,
        limit: i64,
    },
}

/// One revision of a key as stored.
#[derive(sqlx::FromRow)]
struct KvRow {
    key: String,
    revision: i64,
    operation: String,
    value: Vec<u8>,
    created_at: Ts,
    expires_at: Option<Ts>,
}

impl KvRow {
    /// A live value now: not a tombstone, not expired.
    fn live(&self, now: Ts) -> bool {
        self.operation == "put" && self.expires_at.is_none_or(|t| t > now)
    }
}

impl From<KvRow> for KvEntry {
    fn from(row: KvRow) -> Self {
        Self {
            key: row.key,
            revision: row.revision,
            deleted: row.operation != "put",
            value: row.value,
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct BucketRow {
    name: String,
    description: String,
    ttl_seconds: i64,
    max_value_size: i64,
    max_bytes: i64,
    history: i32,
    created_at: Ts,
    values_count: i64,
    bytes: i64,
}

/// The bucket's limits and its next revision, taken under the bucket row's lock.
#[derive(sqlx::FromRow)]
struct LockedBucket {
    revision: i64,
    max_value_size: i64,
    ttl_seconds: i64,
    history: i32,
    max_bytes: i64,
}

/// A database watch being served.
struct BucketTail {
    env: EnvId,
    bucket: String,
    pattern: Option<EventPattern>,
    /// The bucket's revision when the watch began: the snapshot is what is at or below it.
    start: i64,
    changes: Arc<Notify>,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<KvWatchEvent, KvWatchEnd>>,
}

/// Rows a database watcher reads per round.
const WATCH_BATCH: i64 = 500;
/// A database watcher reads again at least this often, in case a wakeup was missed.
const WATCH_SWEEP: Duration = Duration::from_secs(2);

impl<D: Db> SqlStore<D> {
    async fn bucket_revision(&self, env: &EnvId, bucket: &str) -> Result<Option<i64>, StoreError> {
        self.db
            .reader()
            .await?
            .scalar_optional(sql!("kv_bucket_revision"), args![env.as_str(), bucket])
            .await
    }

    async fn entries_after(
        &self,
        env: &EnvId,
        bucket: &str,
        after: i64,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let rows: Vec<KvRow> = self
            .db
            .reader()
            .await?
            .fetch_all(
                sql!("kv_entries_after"),
                args![env.as_str(), bucket, after, WATCH_BATCH],
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// A database watch: the live values, then the rows after the last revision sent, read
    /// again on every change notice (a burst is delivered in order without gaps; a revision
    /// pruned before it was read is superseded by a newer one of the same key).
    async fn tail_bucket(self: Arc<Self>, tail: BucketTail) {
        let BucketTail {
            env,
            bucket,
            pattern,
            start,
            changes,
            shutdown,
            tx,
        } = tail;
        let wanted = |e: &KvEntry| pattern.as_ref().is_none_or(|p| p.matches(&e.key));
        let send = |entry: KvEntry| {
            tx.send(Ok(KvWatchEvent {
                bucket: bucket.clone(),
                entry,
            }))
        };
        let now = Ts::now();
        let snapshot: Result<Vec<KvRow>, StoreError> = match self.db.reader().await {
            Ok(mut c) => {
                c.fetch_all(
                    sql!("kv_live_entries"),
                    args![env.as_str(), bucket.as_str(), now],
                )
                .await
            }
            Err(e) => Err(e),
        };
        let snapshot = match snapshot {
            Ok(rows) => rows,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        for row in snapshot {
            let entry = KvEntry::from(row);
            if entry.revision <= start && wanted(&entry) && send(entry).await.is_err() {
                return;
            }
        }
        let mut last = start;
        loop {
            let changed = changes.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            loop {
                let rows = match self.entries_after(&env, &bucket, last).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = rows.len() as i64 == WATCH_BATCH;
                if rows.is_empty() {
                    // The bucket may have been deleted meanwhile (and maybe created again: its
                    // revisions then start over, below what this watch has sent).
                    match self.bucket_revision(&env, &bucket).await {
                        Ok(Some(revision)) if revision >= last => {}
                        Ok(_) => {
                            let _ = tx.send(Err(KvWatchEnd::BucketDeleted)).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    }
                }
                for entry in rows {
                    last = entry.revision;
                    if wanted(&entry) && send(entry).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(WATCH_SWEEP) => {}
                () = tx.closed() => return,
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[async_trait]
impl<D: Db> KvStore for SqlStore<D> {
    async fn kv_create_bucket(&self, env: &EnvId, b: &BucketSettings) -> Result<bool, StoreError> {
        let created: Option<String> = self
            .db
            .writer()
            .await?
            .scalar_optional(
                sql!("kv_insert_bucket"),
                args![
                    env.as_str(),
                    &b.name,
                    &b.description,
                    b.ttl_seconds,
                    b.max_value_size,
                    b.max_bytes,
                    b.history.max(1),
                    Ts::now(),
                ],
            )
            .await?;
        Ok(created.is_some())
    }

    async fn kv_buckets(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<BucketRecord>, StoreError> {
        let rows: Vec<BucketRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("kv_bucket_stats"), args![env.as_str(), name])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| BucketRecord {
                settings: BucketSettings {
                    name: r.name,
                    description: r.description,
                    ttl_seconds: r.ttl_seconds,
                    max_value_size: r.max_value_size,
                    max_bytes: r.max_bytes,
                    history: r.history,
                },
                created_at: r.created_at,
                values: r.values_count,
                bytes: r.bytes,
            })
            .collect())
    }

    async fn kv_delete_bucket(&self, env: &EnvId, name: &str) -> Result<bool, StoreError> {
        let deleted = self
            .db
            .writer()
            .await?
            .execute(sql!("kv_delete_bucket"), args![env.as_str(), name])
            .await?;
        Ok(deleted > 0)
    }

    async fn kv_write(&self, w: &KvWrite) -> Result<KvWriteOutcome, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let bucket: Option<LockedBucket> = tx
            .fetch_optional(sql!("kv_lock_bucket"), args![w.env_id.as_str(), &w.bucket])
            .await?;
        let Some(bucket) = bucket else {
            return Ok(KvWriteOutcome::NoSuchBucket);
        };
        if let Some(value) = &w.value {
            let size = value.len() as i64;
            if bucket.max_value_size > 0 && size > bucket.max_value_size {
                return Ok(KvWriteOutcome::TooLarge {
                    size: value.len(),
                    limit: bucket.max_value_size,
                });
            }
            if bucket.max_bytes > 0 {
                let used: i64 = tx
                    .scalar(sql!("kv_bucket_bytes"), args![w.env_id.as_str(), &w.bucket])
                    .await?;
                if used + size > bucket.max_bytes {
                    return Ok(KvWriteOutcome::BucketFull {
                        used,
                        limit: bucket.max_bytes,
                    });
                }
            }
        }
        let latest: Option<KvRow> = tx
            .fetch_optional(
                sql!("kv_latest"),
                args![w.env_id.as_str(), &w.bucket, &w.key],
            )
            .await?;
        let live = latest.as_ref().filter(|r| r.live(now));
        let holds = match w.condition {
            KvCondition::None => true,
            KvCondition::Absent => live.is_none(),
            KvCondition::Revision(expected) => live.is_some_and(|r| r.revision == expected),
        };
        if !holds {
            return Ok(KvWriteOutcome::ConditionFailed {
                current: live.map_or(0, |r| r.revision),
            });
        }
        let expires = (bucket.ttl_seconds > 0 && w.value.is_some())
            .then(|| Ts(now.0 + chrono::Duration::seconds(bucket.ttl_seconds)));
        let (operation, bytes) = match &w.value {
            Some(v) => ("put", v.clone()),
            None => ("delete", Vec::new()),
        };
        tx.execute(
            sql!("kv_insert_entry"),
            args![
                w.env_id.as_str(),
                &w.bucket,
                &w.key,
                bucket.revision,
                operation,
                bytes.as_slice(),
                now,
                expires,
            ],
        )
        .await?;
        tx.execute(
            sql!("kv_prune_history"),
            args![
                w.env_id.as_str(),
                &w.bucket,
                &w.key,
                i64::from(bucket.history.max(1)),
            ],
        )
        .await?;
        // Watchers on other nodes read the bucket again (delivered at commit).
        let payload = super::kv_notify_payload(self.db.node_id());
        tx.execute(sql!("notify_commit"), args![payload.as_str()])
            .await?;
        D::commit(tx).await?;
        Ok(KvWriteOutcome::Written(KvEntry {
            key: w.key.clone(),
            revision: bucket.revision,
            deleted: w.value.is_none(),
            value: bytes,
            created_at: now,
        }))
    }

    async fn kv_get(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Option<KvEntry>>, StoreError> {
        let row: Option<KvRow> = self
            .db
            .reader()
            .await?
            .fetch_optional(sql!("kv_latest"), args![env.as_str(), bucket, key])
            .await?;
        let now = Ts::now();
        match row.filter(|r| r.live(now)) {
            Some(row) => Ok(InBucket::Found(Some(row.into()))),
            None if self.bucket_revision(env, bucket).await?.is_some() => Ok(InBucket::Found(None)),
            None => Ok(InBucket::NoSuchBucket),
        }
    }

    async fn kv_purge(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<()>, StoreError> {
        if self.bucket_revision(env, bucket).await?.is_none() {
            return Ok(InBucket::NoSuchBucket);
        }
        self.db
            .writer()
            .await?
            .execute(sql!("kv_purge_key"), args![env.as_str(), bucket, key])
            .await?;
        Ok(InBucket::Found(()))
    }

    async fn kv_keys(
        &self,
        env: &EnvId,
        bucket: &str,
    ) -> Result<InBucket<Vec<String>>, StoreError> {
        if self.bucket_revision(env, bucket).await?.is_none() {
            return Ok(InBucket::NoSuchBucket);
        }
        let keys = self
            .db
            .reader()
            .await?
            .scalars(sql!("kv_live_keys"), args![env.as_str(), bucket, Ts::now()])
            .await?;
        Ok(InBucket::Found(keys))
    }

    async fn kv_history(
        &self,
        env: &EnvId,
        bucket: &str,
        key: &str,
    ) -> Result<InBucket<Vec<KvEntry>>, StoreError> {
        if self.bucket_revision(env, bucket).await?.is_none() {
            return Ok(InBucket::NoSuchBucket);
        }
        let rows: Vec<KvRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("kv_key_history"), args![env.as_str(), bucket, key])
            .await?;
        Ok(InBucket::Found(rows.into_iter().map(Into::into).collect()))
    }

    async fn kv_watch(
        &self,
        env: &EnvId,
        bucket: &str,
        filter: Option<&str>,
        changes: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Result<InBucket<KvWatchStream>, StoreError> {
        let pattern = filter
            .map(key_filter)
            .transpose()
            .map_err(StoreError::Invalid)?;
        let Some(start) = self.bucket_revision(env, bucket).await? else {
            return Ok(InBucket::NoSuchBucket);
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(Arc::new(self.clone()).tail_bucket(BucketTail {
            env: env.clone(),
            bucket: bucket.to_owned(),
            pattern,
            start,
            changes,
            shutdown,
            tx,
        }));
        Ok(InBucket::Found(rx))
    }

    async fn kv_expire(&self) -> Result<u64, StoreError> {
        self.db
            .writer()
            .await?
            .execute(sql!("kv_expire"), args![Ts::now()])
            .await
    }
}
