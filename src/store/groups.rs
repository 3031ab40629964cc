//! Consumer groups in the store: settings, members, and the per-group delivery queue of topic
//! messages. A message is queued for each matching group in the transaction that stores it
//! ([`super::messages`]); members claim due deliveries in order (`FOR UPDATE SKIP LOCKED` on
//! Postgres), and settle them by ack (row deleted), nak (due again later) or term (dead letter).

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::append_history;
use crate::domain::group::{AckMode, GroupSettings, GroupStatus, Settle};
use crate::domain::history::{HistoryKind, NewHistoryEntry};
use crate::domain::time::Ts;
use crate::ids::EnvId;

#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group; `None` when the name is taken in this environment.
    async fn group_create(
        &self,
        env: &EnvId,
        name: &str,
        settings: &GroupSettings,
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
        settings: &GroupSettings,
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
        settle: Settle,
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

/// A consumer group as stored, with the members seen recently.
#[derive(Debug, Clone)]
pub struct ConsumerGroupRecord {
    pub id: String,
    pub env_id: EnvId,
    pub name: String,
    pub settings: crate::domain::group::GroupSettings,
    pub members: i64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// One member's claim on a group's due messages.
#[derive(Debug, Clone)]
pub struct GroupClaim {
    pub group_id: String,
    pub consumer_id: String,
    /// Most unsettled messages the member may hold (those it already holds count).
    pub max_held: i64,
    /// When an unsettled message goes back to the group.
    pub ack_deadline: Ts,
    /// Deliveries a message may have in all; due messages past it become dead letters.
    pub max_deliveries: i32,
    /// Auto-ack groups: what is handed out is done at once.
    pub auto_ack: bool,
}

/// A message handed to a group member.
#[derive(Debug, Clone)]
pub struct GroupDelivery {
    pub sequence: i64,
    /// 1 for the first delivery.
    pub attempt: i32,
    pub id: String,
    pub topic: String,
    pub data: Value,
    pub published_at: Ts,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: String,
    name: String,
    pattern: String,
    filter_expr: String,
    ack_mode: String,
    max_inflight: i32,
    max_redeliveries: i32,
    redeliver_delay_ms: i32,
    metadata: Json<Value>,
    status: String,
    created_at: Ts,
    updated_at: Ts,
    members: i64,
}

impl GroupRow {
    fn record(self, env: &EnvId) -> ConsumerGroupRecord {
        ConsumerGroupRecord {
            id: self.id,
            env_id: env.clone(),
            name: self.name,
            settings: GroupSettings {
                pattern: self.pattern,
                filter_expr: self.filter_expr,
                ack_mode: AckMode::parse_stored(&self.ack_mode),
                max_inflight: self.max_inflight,
                max_redeliveries: self.max_redeliveries,
                redeliver_delay_ms: self.redeliver_delay_ms,
                metadata: self.metadata.0,
                status: GroupStatus::parse_stored(&self.status),
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
            members: self.members,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    message_seq: i64,
    attempts: i32,
    id: String,
    topic: String,
    data: Json<Value>,
    published_at: Ts,
}

fn group_history(env: &EnvId, payload: Value) -> NewHistoryEntry {
    NewHistoryEntry {
        env_id: env.clone(),
        kind: HistoryKind::ConsumerGroupChanged,
        run_id: None,
        function_id: None,
        event_id: None,
        payload,
    }
}

fn group_payload(action: &str, name: &str, s: &GroupSettings) -> Value {
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

#[async_trait]
impl<D: Db> GroupStore for SqlStore<D> {
    async fn group_create(
        &self,
        env: &EnvId,
        name: &str,
        s: &GroupSettings,
    ) -> Result<Option<ConsumerGroupRecord>, StoreError> {
        let now = Ts::now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await?;
        let created: Option<String> = tx
            .scalar_optional(
                sql!("group_insert"),
                args![
                    id.as_str(),
                    env.as_str(),
                    name,
                    &s.pattern,
                    &s.filter_expr,
                    s.ack_mode.as_str(),
                    s.max_inflight,
                    s.max_redeliveries,
                    s.redeliver_delay_ms,
                    &s.metadata,
                    now,
                ],
            )
            .await?;
        if created.is_none() {
            return Ok(None);
        }
        let entry = group_history(env, group_payload("created", name, s));
        append_history(&mut *tx, &entry, now).await?;
        D::commit(tx).await?;
        Ok(Some(ConsumerGroupRecord {
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
        env: &EnvId,
        name: Option<&str>,
    ) -> Result<Vec<ConsumerGroupRecord>, StoreError> {
        let since = Ts::now().minus(MEMBER_STALE);
        let rows: Vec<GroupRow> = self
            .db
            .reader()
            .await?
            .fetch_all(sql!("group_list"), args![env.as_str(), name, since])
            .await?;
        Ok(rows.into_iter().map(|r| r.record(env)).collect())
    }

    async fn group_update(
        &self,
        env: &EnvId,
        name: &str,
        s: &GroupSettings,
    ) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let updated = tx
            .execute(
                sql!("group_update"),
                args![
                    env.as_str(),
                    name,
                    &s.pattern,
                    &s.filter_expr,
                    s.ack_mode.as_str(),
                    s.max_inflight,
                    s.max_redeliveries,
                    s.redeliver_delay_ms,
                    &s.metadata,
                    s.status.as_str(),
                    now,
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        let entry = group_history(env, group_payload("updated", name, s));
        append_history(&mut *tx, &entry, now).await?;
        D::commit(tx).await?;
        Ok(true)
    }

    async fn group_delete(&self, env: &EnvId, name: &str) -> Result<bool, StoreError> {
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let deleted: Option<String> = tx
            .scalar_optional(sql!("group_delete"), args![env.as_str(), name])
            .await?;
        if deleted.is_none() {
            return Ok(false);
        }
        let payload = serde_json::json!({"action": "deleted", "name": name});
        append_history(&mut *tx, &group_history(env, payload), now).await?;
        D::commit(tx).await?;
        Ok(true)
    }

    async fn group_claim(&self, c: &GroupClaim) -> Result<Vec<GroupDelivery>, StoreError> {
        let now = Ts::now();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("group_member_seen"),
            args![&c.group_id, &c.consumer_id, now],
        )
        .await?;
        tx.execute(
            sql!("group_exhaust"),
            args![&c.group_id, now, c.max_deliveries],
        )
        .await?;
        let held: i64 = tx
            .scalar(sql!("group_held"), args![&c.group_id, &c.consumer_id, now])
            .await?;
        let limit = c.max_held - held;
        if limit <= 0 {
            D::commit(tx).await?;
            return Ok(Vec::new());
        }
        let claimed = tx
            .execute(
                sql!("group_claim"),
                args![
                    &c.group_id,
                    now,
                    &c.consumer_id,
                    c.ack_deadline,
                    limit,
                    token.as_str()
                ],
            )
            .await?;
        if claimed == 0 {
            D::commit(tx).await?;
            return Ok(Vec::new());
        }
        let rows: Vec<ClaimedRow> = tx
            .fetch_all(sql!("group_claimed"), args![&c.group_id, token.as_str()])
            .await?;
        if c.auto_ack {
            tx.execute(
                sql!("group_drop_claimed"),
                args![&c.group_id, token.as_str()],
            )
            .await?;
        }
        D::commit(tx).await?;
        Ok(rows
            .into_iter()
            .map(|r| GroupDelivery {
                sequence: r.message_seq,
                attempt: r.attempts,
                id: r.id,
                topic: r.topic,
                data: r.data.0,
                published_at: r.published_at,
            })
            .collect())
    }

    async fn group_settle(
        &self,
        group_id: &str,
        message_id: &str,
        settle: Settle,
    ) -> Result<bool, StoreError> {
        let mut conn = self.db.writer().await?;
        let settled = match settle {
            Settle::Ack => {
                conn.execute(sql!("group_ack"), args![group_id, message_id])
                    .await?
            }
            Settle::Term => {
                conn.execute(sql!("group_term"), args![group_id, message_id])
                    .await?
            }
            Settle::Nak { delay_ms } => {
                let delay = std::time::Duration::from_millis(u64::try_from(delay_ms).unwrap_or(0));
                let due = Ts::now().plus(delay);
                conn.execute(sql!("group_nak"), args![group_id, message_id, due])
                    .await?
            }
        };
        Ok(settled > 0)
    }

    async fn group_member_seen(&self, group_id: &str, consumer_id: &str) -> Result<(), StoreError> {
        self.db
            .writer()
            .await?
            .execute(
                sql!("group_member_seen"),
                args![group_id, consumer_id, Ts::now()],
            )
            .await?;
        Ok(())
    }

    async fn group_leave(&self, group_id: &str, consumer_id: &str) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            sql!("group_release"),
            args![group_id, consumer_id, Ts::now()],
        )
        .await?;
        tx.execute(sql!("group_member_left"), args![group_id, consumer_id])
            .await?;
        D::commit(tx).await?;
        Ok(())
    }

    async fn group_next_due(&self, group_id: &str) -> Result<Option<Ts>, StoreError> {
        // One row; its value is NULL when nothing is due.
        self.db
            .reader()
            .await?
            .scalar::<Option<Ts>>(sql!("group_next_due"), args![group_id])
            .await
    }

    async fn group_dead_letters(&self, group_id: &str) -> Result<i64, StoreError> {
        self.db
            .reader()
            .await?
            .scalar(sql!("group_dead_count"), args![group_id])
            .await
    }
}
