//! `group_store!`: consumer groups (settings, members, and the per-group delivery queue of
//! topic messages), instantiated per backend like `sql_store!`. A message is queued for each
//! matching group in the transaction that stores it; members claim due deliveries in order
//! (`FOR UPDATE SKIP LOCKED` on Postgres), and settle them by ack (row deleted), nak (due
//! again later) or term (dead letter).

use async_trait::async_trait;

use crate::ids::EnvId;
use crate::store::StoreError;
use crate::store::model::{ConsumerGroupRecord, GroupClaim, GroupDelivery};
use crate::store::time::Ts;

/// The consumer-group half of the [`Store`](super::Store).
#[async_trait]
pub trait GroupStore {
    /// Creates a group; `None` when the name is taken in this environment.
    async fn group_create(
        &self,
        env: &EnvId,
        name: &str,
        settings: &crate::domain::group::GroupSettings,
    ) -> Result<Option<ConsumerGroupRecord>, StoreError>;

    /// One group by name, or every group of the environment.
    async fn group_list(
        &self,
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<ConsumerGroupRecord>, StoreError>;

    /// Replaces a group's settings; false when it does not exist.
    async fn group_update(
        &self,
        env: &EnvId,
        name: &str,
        settings: &crate::domain::group::GroupSettings,
    ) -> Result<bool, StoreError>;

    /// Deletes a group with its queue and members; false when it does not exist.
    async fn group_delete(&self, env: &EnvId, name: &str) -> Result<bool, StoreError>;

    /// Takes due deliveries for a member (and records the member as seen).
    async fn group_claim(&self, claim: &GroupClaim) -> Result<Vec<GroupDelivery>, StoreError>;

    /// Settles an in-flight message; false when it was not in flight in this group.
    async fn group_settle(
        &self,
        group_id: &str,
        message_id: &str,
        settle: crate::domain::group::Settle,
    ) -> Result<bool, StoreError>;

    /// Records that a member is still joined (members unseen for a while are not counted).
    async fn group_member_seen(&self, group_id: &str, consumer_id: &str) -> Result<(), StoreError>;

    /// A member left: its in-flight messages are due again at once.
    async fn group_leave(&self, group_id: &str, consumer_id: &str) -> Result<(), StoreError>;

    /// When the group's next delivery becomes due (pending or past its ack deadline).
    async fn group_next_due(&self, group_id: &str) -> Result<Option<Ts>, StoreError>;

    /// Messages that became dead letters in this group.
    async fn group_dead_letters(&self, group_id: &str) -> Result<i64, StoreError>;
}

macro_rules! group_store {
    ($store:ty, $db:ty, $dir:literal) => {
        macro_rules! gsql {
            ($name:literal) => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/", $dir, "/", $name, ".sql"))
            };
        }

        type GroupRow = (
            String,
            String,
            String,
            String,
            String,
            i32,
            i32,
            i32,
            sqlx::types::Json<serde_json::Value>,
            String,
            $crate::store::time::Ts,
            $crate::store::time::Ts,
            i64,
        );

        fn group_record(env: &$crate::ids::EnvId, r: GroupRow) -> $crate::store::model::ConsumerGroupRecord {
            use $crate::domain::group::{AckMode, GroupSettings, GroupStatus};
            $crate::store::model::ConsumerGroupRecord {
                id: r.0,
                env_id: env.clone(),
                name: r.1,
                settings: GroupSettings {
                    pattern: r.2,
                    filter_expr: r.3,
                    ack_mode: AckMode::parse_stored(&r.4),
                    max_inflight: r.5,
                    max_redeliveries: r.6,
                    redeliver_delay_ms: r.7,
                    metadata: r.8 .0,
                    status: GroupStatus::parse_stored(&r.9),
                },
                created_at: r.10,
                updated_at: r.11,
                members: r.12,
            }
        }

        fn group_history(
            env: &$crate::ids::EnvId,
            payload: serde_json::Value,
        ) -> $crate::domain::history::NewHistoryEntry {
            $crate::domain::history::NewHistoryEntry {
                env_id: env.clone(),
                kind: $crate::domain::history::HistoryKind::ConsumerGroupChanged,
                run_id: None,
                function_id: None,
                event_id: None,
                payload,
            }
        }

        fn group_payload(action: &str, name: &str, s: &$crate::domain::group::GroupSettings) -> serde_json::Value {
            serde_json::json!({
                "action": action,
                "name": name,
                "pattern": s.pattern,
                "filter_expr": s.filter_expr,
                "ack_mode": s.ack_mode.as_str(),
                "max_inflight": s.max_inflight,
                "max_redeliveries": s.max_redeliveries,
                "redeliver_delay_ms": s.redeliver_delay_ms,
                "status": s.status.as_str(),
            })
        }

        /// Members not seen for this long are not counted.
        const MEMBER_STALE: std::time::Duration = std::time::Duration::from_secs(120);

        #[async_trait::async_trait]
        impl $crate::store::group_store::GroupStore for $store {
            async fn group_create(
                &self,
                env: &$crate::ids::EnvId,
                name: &str,
                s: &$crate::domain::group::GroupSettings,
            ) -> Result<Option<$crate::store::model::ConsumerGroupRecord>, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let id = uuid::Uuid::now_v7().to_string();
                let mut tx = self.writer().begin().await?;
                let created: Option<String> = sqlx::query_scalar(gsql!("group_insert"))
                    .bind(&id)
                    .bind(env.as_str())
                    .bind(name)
                    .bind(&s.pattern)
                    .bind(&s.filter_expr)
                    .bind(s.ack_mode.as_str())
                    .bind(s.max_inflight)
                    .bind(s.max_redeliveries)
                    .bind(s.redeliver_delay_ms)
                    .bind(sqlx::types::Json(&s.metadata))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if created.is_none() {
                    return Ok(None);
                }
                append_history(&mut tx, &group_history(env, group_payload("created", name, s)), now).await?;
                tx.commit().await?;
                Ok(Some($crate::store::model::ConsumerGroupRecord {
                    id,
                    env_id: env.clone(),
                    name: name.to_owned(),
                    settings: s.clone(),
                    members: 0,
                    created_at: now,
                    updated_at: now,
                }))
            }

            async fn group_list(
                &self,
                env: &$crate::ids::EnvId,
                name: Option<&str>,
            ) -> Result<Vec<$crate::store::model::ConsumerGroupRecord>, $crate::store::StoreError> {
                let since = $crate::store::time::Ts::now().minus(MEMBER_STALE);
                let rows: Vec<GroupRow> = sqlx::query_as(gsql!("group_list"))
                    .bind(env.as_str())
                    .bind(name)
                    .bind(since)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(|r| group_record(env, r)).collect())
            }

            async fn group_update(
                &self,
                env: &$crate::ids::EnvId,
                name: &str,
                s: &$crate::domain::group::GroupSettings,
            ) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let done = sqlx::query(gsql!("group_update"))
                    .bind(env.as_str())
                    .bind(name)
                    .bind(&s.pattern)
                    .bind(&s.filter_expr)
                    .bind(s.ack_mode.as_str())
                    .bind(s.max_inflight)
                    .bind(s.max_redeliveries)
                    .bind(s.redeliver_delay_ms)
                    .bind(sqlx::types::Json(&s.metadata))
                    .bind(s.status.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_history(&mut tx, &group_history(env, group_payload("updated", name, s)), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn group_delete(&self, env: &$crate::ids::EnvId, name: &str) -> Result<bool, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let mut tx = self.writer().begin().await?;
                let deleted: Option<String> = sqlx::query_scalar(gsql!("group_delete"))
                    .bind(env.as_str())
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                if deleted.is_none() {
                    return Ok(false);
                }
                let payload = serde_json::json!({"action": "deleted", "name": name});
                append_history(&mut tx, &group_history(env, payload), now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn group_claim(
                &self,
                c: &$crate::store::model::GroupClaim,
            ) -> Result<Vec<$crate::store::model::GroupDelivery>, $crate::store::StoreError> {
                let now = $crate::store::time::Ts::now();
                let token = uuid::Uuid::new_v4().simple().to_string();
                let mut tx = self.writer().begin().await?;
                sqlx::query(gsql!("group_member_seen"))
                    .bind(&c.group_id)
                    .bind(&c.consumer_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(gsql!("group_exhaust"))
                    .bind(&c.group_id)
                    .bind(now)
                    .bind(c.max_deliveries)
                    .execute(&mut *tx)
                    .await?;
                let held: i64 = sqlx::query_scalar(gsql!("group_held"))
                    .bind(&c.group_id)
                    .bind(&c.consumer_id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let limit = c.max_held - held;
                if limit <= 0 {
                    tx.commit().await?;
                    return Ok(Vec::new());
                }
                let claimed = sqlx::query(gsql!("group_claim"))
                    .bind(&c.group_id)
                    .bind(now)
                    .bind(&c.consumer_id)
                    .bind(c.ack_deadline)
                    .bind(limit)
                    .bind(&token)
                    .execute(&mut *tx)
                    .await?;
                if claimed.rows_affected() == 0 {
                    tx.commit().await?;
                    return Ok(Vec::new());
                }
                let rows: Vec<(i64, i32, String, String, sqlx::types::Json<serde_json::Value>, $crate::store::time::Ts)> =
                    sqlx::query_as(gsql!("group_claimed"))
                        .bind(&c.group_id)
                        .bind(&token)
                        .fetch_all(&mut *tx)
                        .await?;
                if c.auto_ack {
                    sqlx::query(gsql!("group_drop_claimed"))
                        .bind(&c.group_id)
                        .bind(&token)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::model::GroupDelivery {
                        sequence: r.0,
                        attempt: r.1,
                        id: r.2,
                        topic: r.3,
                        data: r.4 .0,
                        published_at: r.5,
                    })
                    .collect())
            }

            async fn group_settle(
                &self,
                group_id: &str,
                message_id: &str,
                settle: $crate::domain::group::Settle,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::domain::group::Settle;
                let done = match settle {
                    Settle::Ack => {
                        sqlx::query(gsql!("group_ack")).bind(group_id).bind(message_id).execute(self.writer()).await?
                    }
                    Settle::Term => {
                        sqlx::query(gsql!("group_term")).bind(group_id).bind(message_id).execute(self.writer()).await?
                    }
                    Settle::Nak { delay_ms } => {
                        let due = $crate::store::time::Ts::now()
                            .plus(std::time::Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0)));
                        sqlx::query(gsql!("group_nak"))
                            .bind(group_id)
                            .bind(message_id)
                            .bind(due)
                            .execute(self.writer())
                            .await?
                    }
                };
                Ok(done.rows_affected() > 0)
            }

            async fn group_leave(&self, group_id: &str, consumer_id: &str) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.writer().begin().await?;
                sqlx::query(gsql!("group_release"))
                    .bind(group_id)
                    .bind(consumer_id)
                    .bind($crate::store::time::Ts::now())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(gsql!("group_member_left")).bind(group_id).bind(consumer_id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn group_member_seen(&self, group_id: &str, consumer_id: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query(gsql!("group_member_seen"))
                    .bind(group_id)
                    .bind(consumer_id)
                    .bind($crate::store::time::Ts::now())
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn group_next_due(&self, group_id: &str) -> Result<Option<$crate::store::time::Ts>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(gsql!("group_next_due")).bind(group_id).fetch_one(self.reader()).await?)
            }

            async fn group_dead_letters(&self, group_id: &str) -> Result<i64, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(gsql!("group_dead_count")).bind(group_id).fetch_one(self.reader()).await?)
            }
        }
    };
}

pub(crate) use group_store;
