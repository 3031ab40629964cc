//! `kv_store!`: the database-backed KV store (buckets, revisions, compare-and-set, TTL,
//! history), instantiated per backend like `sql_store!`. Revisions come from a per-bucket
//! counter taken under the bucket row's lock, so they are strictly increasing per bucket and
//! CAS is atomic under concurrent writers on both backends. Each write NOTIFYs other nodes
//! (`k`) so their watchers read the new rows.

macro_rules! kv_store {
    ($store:ty, $db:ty, $dir:literal) => {
        macro_rules! kvsql {
            ($name:literal) => {
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/sql/",
                    $dir,
                    "/",
                    $name,
                    ".sql"
                ))
            };
        }

        type KvRow = (
            String,
            i64,
            String,
            Vec<u8>,
            $crate::store::time::Ts,
            Option<$crate::store::time::Ts>,
        );
        type BucketRow = (
            String,
            String,
            i64,
            i64,
            i64,
            i32,
            $crate::store::time::Ts,
            i64,
            i64,
        );

        fn kv_entry(row: KvRow) -> $crate::store::model::KvEntry {
            $crate::store::model::KvEntry {
                key: row.0,
                revision: row.1,
                deleted: row.2 != "put",
                value: row.3,
                created_at: row.4,
            }
        }

        /// A row that is a live value now (not a tombstone, not expired).
        fn kv_live(row: &KvRow, now: $crate::store::time::Ts) -> bool {
            row.2 == "put" && row.5.is_none_or(|t| t > now)
        }

        impl $store {
            async fn kv_create_bucket_impl(
                &self,
                env: &$crate::ids::EnvId,
                b: &$crate::domain::kv::BucketSettings,
            ) -> Result<bool, $crate::store::StoreError> {
                let created: Option<String> = sqlx::query_scalar(kvsql!("kv_insert_bucket"))
                    .bind(env.as_str())
                    .bind(&b.name)
                    .bind(&b.description)
                    .bind(b.ttl_seconds)
                    .bind(b.max_value_size)
                    .bind(b.max_bytes)
                    .bind(b.history.max(1))
                    .bind($crate::store::time::Ts::now())
                    .fetch_optional(self.writer())
                    .await?;
                Ok(created.is_some())
            }

            async fn kv_buckets_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: Option<&str>,
            ) -> Result<Vec<$crate::store::model::BucketRecord>, $crate::store::StoreError> {
                let rows: Vec<BucketRow> = sqlx::query_as(kvsql!("kv_bucket_stats"))
                    .bind(env.as_str())
                    .bind(name)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::model::BucketRecord {
                        settings: $crate::domain::kv::BucketSettings {
                            name: r.0,
                            description: r.1,
                            ttl_seconds: r.2,
                            max_value_size: r.3,
                            max_bytes: r.4,
                            history: r.5,
                        },
                        created_at: r.6,
                        values: r.7,
                        bytes: r.8,
                    })
                    .collect())
            }

            async fn kv_delete_bucket_impl(
                &self,
                env: &$crate::ids::EnvId,
                name: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(kvsql!("kv_delete_bucket"))
                    .bind(env.as_str())
                    .bind(name)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn kv_write_impl(
                &self,
                w: &$crate::store::model::KvWrite,
            ) -> Result<$crate::store::model::KvWriteOutcome, $crate::store::StoreError> {
                use $crate::domain::kv::KvCondition;
                use $crate::store::model::KvWriteOutcome;
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let bucket: Option<(i64, i64, i64, i32, i64)> =
                    sqlx::query_as(kvsql!("kv_lock_bucket"))
                        .bind(w.env_id.as_str())
                        .bind(&w.bucket)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((revision, max_value_size, ttl_seconds, history, max_bytes)) = bucket
                else {
                    return Ok(KvWriteOutcome::NoSuchBucket);
                };
                if let Some(value) = &w.value {
                    if max_value_size > 0 && value.len() as i64 > max_value_size {
                        return Ok(KvWriteOutcome::TooLarge {
                            size: value.len(),
                            limit: max_value_size,
                        });
                    }
                    if max_bytes > 0 {
                        let used: i64 = sqlx::query_scalar(kvsql!("kv_bucket_bytes"))
                            .bind(w.env_id.as_str())
                            .bind(&w.bucket)
                            .fetch_one(&mut *tx)
                            .await?;
                        if used + value.len() as i64 > max_bytes {
                            return Ok(KvWriteOutcome::BucketFull {
                                used,
                                limit: max_bytes,
                            });
                        }
                    }
                }
                let latest: Option<KvRow> = sqlx::query_as(kvsql!("kv_latest"))
                    .bind(w.env_id.as_str())
                    .bind(&w.bucket)
                    .bind(&w.key)
                    .fetch_optional(&mut *tx)
                    .await?;
                let live = latest.as_ref().filter(|r| kv_live(r, now));
                let holds = match w.condition {
                    KvCondition::None => true,
                    KvCondition::Absent => live.is_none(),
                    KvCondition::Revision(expected) => live.is_some_and(|r| r.1 == expected),
                };
                if !holds {
                    return Ok(KvWriteOutcome::ConditionFailed {
                        current: live.map_or(0, |r| r.1),
                    });
                }
                let expires = (ttl_seconds > 0 && w.value.is_some()).then(|| {
                    $crate::store::time::Ts(now.0 + chrono::Duration::seconds(ttl_seconds))
                });
                let (operation, bytes) = match &w.value {
                    Some(v) => ("put", v.clone()),
                    None => ("delete", Vec::new()),
                };
                sqlx::query(kvsql!("kv_insert_entry"))
                    .bind(w.env_id.as_str())
                    .bind(&w.bucket)
                    .bind(&w.key)
                    .bind(revision)
                    .bind(operation)
                    .bind(&bytes)
                    .bind(now)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(kvsql!("kv_prune_history"))
                    .bind(w.env_id.as_str())
                    .bind(&w.bucket)
                    .bind(&w.key)
                    .bind(i64::from(history.max(1)))
                    .execute(&mut *tx)
                    .await?;
                // Watchers on other nodes read the bucket again (delivered at commit).
                sqlx::query(kvsql!("notify_commit"))
                    .bind($crate::store::kv_notify_payload(self.node_id()))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(KvWriteOutcome::Written($crate::store::model::KvEntry {
                    key: w.key.clone(),
                    revision,
                    deleted: w.value.is_none(),
                    value: bytes,
                    created_at: now,
                }))
            }

            async fn kv_get_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
                key: &str,
            ) -> Result<Option<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                let row: Option<KvRow> = sqlx::query_as(kvsql!("kv_latest"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind(key)
                    .fetch_optional(self.reader())
                    .await?;
                let now = $crate::store::time::Ts::now();
                Ok(row.filter(|r| kv_live(r, now)).map(kv_entry))
            }

            async fn kv_purge_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
                key: &str,
            ) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query(kvsql!("kv_purge_key"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind(key)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected())
            }

            async fn kv_keys_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(kvsql!("kv_live_keys"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind($crate::store::time::Ts::now())
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn kv_history_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
                key: &str,
            ) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                let rows: Vec<KvRow> = sqlx::query_as(kvsql!("kv_key_history"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind(key)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(kv_entry).collect())
            }

            async fn kv_revision_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(kvsql!("kv_bucket_revision"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn kv_entries_after_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
                after: i64,
                limit: i64,
            ) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                let rows: Vec<KvRow> = sqlx::query_as(kvsql!("kv_entries_after"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(kv_entry).collect())
            }

            async fn kv_live_entries_impl(
                &self,
                env: &$crate::ids::EnvId,
                bucket: &str,
            ) -> Result<Vec<$crate::store::model::KvEntry>, $crate::store::StoreError> {
                let rows: Vec<KvRow> = sqlx::query_as(kvsql!("kv_live_entries"))
                    .bind(env.as_str())
                    .bind(bucket)
                    .bind($crate::store::time::Ts::now())
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(kv_entry).collect())
            }

            async fn kv_expire_impl(&self) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query(kvsql!("kv_expire"))
                    .bind($crate::store::time::Ts::now())
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use kv_store;
