//! Topic messages in the store: a durable publish (queued for its consumer groups in the same
//! transaction, idempotent on its key), replay reads, lookups by sequence.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::db::{Db, SqlStore};
use super::sql::{Conn, args, sql};
use super::writes::notify_commit;
use super::{StoreError, StoredKind};
use crate::domain::lifecycle::Effects;
use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId};

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a topic message and queues it for `groups`. A repeated idempotency key returns
    /// the first message and writes nothing.
    async fn publish_message(&self, message: &NewMessage<'_>) -> Result<Published, StoreError>;

    /// Topic messages newest first: the latest `limit`, or only those after `after_seq`.
    async fn recent_messages(
        &self,
        env: &EnvId,
        after_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// A topic message by its sequence (any environment: a copy announced by another node).
    async fn message_by_seq(&self, seq: i64) -> Result<Option<StoredMessage>, StoreError>;

    /// The environment's topics (those with stored messages), by name.
    async fn list_topics(&self, env: &EnvId, limit: i64) -> Result<Vec<TopicRow>, StoreError>;

    /// One topic's counts (zero for a topic with no message).
    async fn topic_stats(&self, env: &EnvId, topic: &str) -> Result<TopicStatsRow, StoreError>;
}

/// A topic as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopicRow {
    pub topic: String,
    pub message_count: i64,
    pub first_at: Option<Ts>,
    pub last_at: Option<Ts>,
}

/// One topic's counts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopicStatsRow {
    pub message_count: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub lag: i64,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub env: &'a EnvId,
    pub topic: &'a str,
    pub data: &'a Value,
    pub idempotency_key: Option<&'a str>,
    /// The run whose step published it (the flow map's topic edges).
    pub published_by_run: Option<&'a str>,
    /// The consumer groups (ids) whose filters it passes.
    pub groups: &'a [String],
}

/// What a publish stored, or found stored under its idempotency key.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub seq: i64,
    pub duplicate: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredMessage {
    pub env_id: String,
    pub id: String,
    pub seq: i64,
    pub topic: String,
    pub data: Json<Value>,
    pub published_at: Ts,
}

impl StoredMessage {
    pub fn env(&self) -> EnvId {
        EnvId::from_stored(self.env_id.clone())
    }
}

#[derive(sqlx::FromRow)]
struct FirstMessage {
    id: String,
    seq: i64,
}

#[async_trait]
impl<D: Db> MessageStore for SqlStore<D> {
    async fn publish_message(&self, m: &NewMessage<'_>) -> Result<Published, StoreError> {
        let id = EventId::generate().to_string();
        let now = Ts::now();
        let mut tx = self.db.begin().await?;
        let seq: Option<i64> = tx
            .scalar_optional(
                sql!("publish_message"),
                args![
                    id.as_str(),
                    m.env.as_str(),
                    m.topic,
                    m.data,
                    m.idempotency_key,
                    now,
                    m.published_by_run
                ],
            )
            .await?;
        let published = match seq {
            Some(seq) => {
                // Queued for its consumer groups in the transaction that stores it.
                for group in m.groups {
                    tx.execute(sql!("group_enqueue"), args![group, seq, now])
                        .await?;
                }
                let effects = Effects {
                    stored: vec![(StoredKind::Topic, seq)],
                    ..Default::default()
                };
                notify_commit(&mut *tx, self.db.node_id(), &effects).await?;
                Published {
                    id,
                    seq,
                    duplicate: false,
                }
            }
            None => {
                let first: FirstMessage = tx
                    .fetch_one(
                        sql!("message_by_idempotency_key"),
                        args![m.env.as_str(), m.idempotency_key],
                    )
                    .await?;
                Published {
                    id: first.id,
                    seq: first.seq,
                    duplicate: true,
                }
            }
        };
        D::commit(tx).await?;
        Ok(published)
    }

    async fn recent_messages(
        &self,
        env: &EnvId,
        after_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(
                sql!("recent_messages"),
                args![env.as_str(), after_seq, limit],
            )
            .await
    }

    async fn message_by_seq(&self, seq: i64) -> Result<Option<StoredMessage>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_optional(sql!("message_by_seq"), args![seq])
            .await
    }

    async fn list_topics(&self, env: &EnvId, limit: i64) -> Result<Vec<TopicRow>, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_all(sql!("list_topics"), args![env.as_str(), limit])
            .await
    }

    async fn topic_stats(&self, env: &EnvId, topic: &str) -> Result<TopicStatsRow, StoreError> {
        self.db
            .reader()
            .await?
            .fetch_one(sql!("topic_stats"), args![env.as_str(), topic])
            .await
    }
}
