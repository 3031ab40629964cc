//! Publishing to developer topics: durable in the database (queued for matching consumer groups
//! in the same transaction), then fanned out live; never starts functions.

use serde_json::Value;

use crate::domain::pattern::validate_event_name;
use crate::ids::EnvId;

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
    ) -> Result<Published, EngineError> {
        validate_event_name(topic).map_err(|e| {
            EngineError::InvalidArgument(format!("topic: {e}").replace("event pattern", "topic"))
        })?;
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
