//! Publishing to developer topics: durable in the database (queued for matching consumer groups
//! in the same transaction), then fanned out live; never starts functions.

use serde_json::Value;

use crate::domain::pattern::validate_event_name;
use crate::ids::{EnvId, RunId};

use super::{Engine, EngineError};

#[derive(Debug, Clone)]
pub struct Published {
    pub event_id: String,
    pub sequence: i64,
    pub duplicate: bool,
}

impl Engine {
    pub async fn publish(
        &self,
        env: &EnvId,
        topic: &str,
        data: Value,
        idempotency_key: Option<&str>,
        published_by_run: Option<&RunId>,
    ) -> Result<Published, EngineError> {
        check_topic(topic)?;
        let size = serde_json::to_vec(&data).map_or(0, |v| v.len());
        let limit = self.options().max_payload_bytes;
        if size > limit {
            return Err(EngineError::PayloadTooLarge {
                what: "message data",
                size,
                limit,
            });
        }
        let key = idempotency_key.filter(|k| !k.is_empty());
        let groups = self.groups_for_message(env, topic, &data).await?;
        let stored = self
            .store()
            .publish_message(&crate::store::messages::NewMessage {
                env,
                topic,
                data: &data,
                idempotency_key: key,
                published_by_run: published_by_run.map(RunId::as_str),
                groups: &groups,
            })
            .await?;
        let (event_id, sequence, duplicate) = (stored.id, stored.seq, stored.duplicate);
        if !duplicate {
            self.publish_live(super::BusMessage::topic(
                env.clone(),
                event_id.clone(),
                sequence,
                topic.to_owned(),
                data,
                crate::domain::time::Ts::now(),
            ));
        }
        Ok(Published {
            event_id,
            sequence,
            duplicate,
        })
    }
}

/// A stored message or event, by what identifies it.
pub(crate) enum StoredRef {
    /// A topic message by its sequence.
    Topic(i64),
    /// An event by its sequence (a NOTIFY).
    EventSeq(i64),
    /// An event by its id (a NATS copy sent by reference).
    Event(EnvId, crate::ids::EventId),
}

impl Engine {
    /// Fans out a message or event another node stored (told by NOTIFY) to this node's live
    /// subscribers.
    pub(crate) async fn relay_stored(&self, kind: crate::store::StoredKind, seq: i64) {
        // With NATS the other node sent the copy itself; relaying the NOTIFY too would
        // deliver it twice.
        if self.live_over_nats() {
            return;
        }
        self.relay_from_store(match kind {
            crate::store::StoredKind::Topic => StoredRef::Topic(seq),
            crate::store::StoredKind::Event => StoredRef::EventSeq(seq),
        })
        .await;
    }

    /// Reads a stored message or event and hands it to this node's live subscribers.
    pub(crate) async fn relay_from_store(&self, stored: StoredRef) {
        if !self.bus().has_subscribers() {
            return;
        }
        let event = |e: crate::store::events::EventRecord| {
            super::BusMessage::event(e.env_id, e.id.to_string(), e.name, e.data, e.received_at)
        };
        let read = match stored {
            StoredRef::Topic(seq) => self.store().message_by_seq(seq).await.map(|m| {
                m.map(|m| {
                    super::BusMessage::topic(
                        m.env(),
                        m.id,
                        m.seq,
                        m.topic,
                        m.data.0,
                        m.published_at,
                    )
                })
            }),
            StoredRef::EventSeq(seq) => self.store().event_by_seq(seq).await.map(|e| e.map(event)),
            StoredRef::Event(env, id) => self
                .store()
                .get_event(&env, &id)
                .await
                .map(|e| e.map(event)),
        };
        match read {
            Ok(Some(m)) => self.bus().publish_message(m),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "relaying a message stored by another node"),
        }
    }
}

/// A topic with its counts and the consumer groups whose pattern takes it.
#[derive(Debug, Clone)]
pub struct TopicSummary {
    pub name: String,
    pub message_count: i64,
    pub consumer_count: usize,
    pub first_at: Option<crate::domain::time::Ts>,
    pub last_at: Option<crate::domain::time::Ts>,
}

/// One topic's counts: messages, their sequence range, consumer groups, and deliveries those
/// groups have not acked yet (its lag).
#[derive(Debug, Clone)]
pub struct TopicStats {
    pub name: String,
    pub message_count: i64,
    pub consumer_count: usize,
    pub lag: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// The most topics one listing returns.
const MAX_TOPICS: i64 = 1000;

impl Engine {
    /// The environment's topics (those with stored messages), by name.
    pub async fn list_topics(&self, env: &EnvId) -> Result<Vec<TopicSummary>, EngineError> {
        let patterns = self.group_patterns(env).await?;
        Ok(self
            .store()
            .list_topics(env, MAX_TOPICS)
            .await?
            .into_iter()
            .map(|t| TopicSummary {
                consumer_count: consumers_of(&patterns, &t.topic),
                name: t.topic,
                message_count: t.message_count,
                first_at: t.first_at,
                last_at: t.last_at,
            })
            .collect())
    }

    pub async fn topic_stats(&self, env: &EnvId, topic: &str) -> Result<TopicStats, EngineError> {
        check_topic(topic)?;
        let patterns = self.group_patterns(env).await?;
        let stats = self.store().topic_stats(env, topic).await?;
        Ok(TopicStats {
            name: topic.to_owned(),
            message_count: stats.message_count,
            consumer_count: consumers_of(&patterns, topic),
            lag: stats.lag,
            first_seq: stats.first_seq,
            last_seq: stats.last_seq,
        })
    }

    async fn group_patterns(
        &self,
        env: &EnvId,
    ) -> Result<Vec<crate::domain::pattern::EventPattern>, EngineError> {
        Ok(self
            .consumer_groups(env)
            .await?
            .iter()
            .filter_map(|g| crate::domain::pattern::EventPattern::parse(&g.settings.pattern).ok())
            .collect())
    }
}

/// A topic is named like an event (dotted tokens, no wildcards).
fn check_topic(topic: &str) -> Result<(), EngineError> {
    validate_event_name(topic).map_err(|e| {
        EngineError::InvalidArgument(format!("topic: {e}").replace("event pattern", "topic"))
    })
}

fn consumers_of(patterns: &[crate::domain::pattern::EventPattern], topic: &str) -> usize {
    patterns.iter().filter(|p| p.matches(topic)).count()
}
