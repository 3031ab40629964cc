//! Cross-node live fan-out over NATS (with `--nats-url`): each node publishes a copy of every
//! topic message and event it stores to `ironflow.live.<env>`, and feeds the copies other nodes
//! publish into its own bus. Without NATS the same copies cross nodes over Postgres NOTIFY (the
//! receiving node re-reads them from the database). NATS never holds the only copy: the
//! database has the original, and replay / resume read it there. A message too large for
//! one NATS message travels by reference (the receiver reads it from the database), and
//! when NATS falls far behind, copies are dropped (counted) rather than queued without end:
//! subscribers that miss one resume from the database.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::domain::time::Ts;
use crate::ids::{EnvId, EventId};

use super::pubsub::StoredRef;
use super::{BusMessage, Engine, MessageKind};

const SUBJECT_PREFIX: &str = "ironflow.live";
/// Copies waiting for NATS; beyond this they are dropped.
const OUTGOING_QUEUE: usize = 10_000;
/// Room left in a NATS message for the subject and protocol framing.
const FRAMING_BYTES: usize = 1024;

/// A live message as it travels between nodes.
#[derive(Serialize, Deserialize)]
struct WireMessage {
    node: String,
    env_id: String,
    kind: WireKind,
    subject: String,
    id: String,
    sequence: i64,
    data: serde_json::Value,
    timestamp: chrono::DateTime<chrono::Utc>,
    /// `data` was left out (too large for NATS): read the stored copy.
    #[serde(default)]
    by_reference: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WireKind {
    Topic,
    Event,
}

type Outgoing = (String, bytes::Bytes);

/// Publishes this node's live messages to NATS and relays the other nodes' to the local bus.
#[derive(Clone)]
pub struct NatsFanout {
    client: async_nats::Client,
    node: String,
    /// Copies leave in commit order through one task ([`run`](Self::run)), so subscribers
    /// elsewhere see a topic's messages in sequence order.
    outgoing: mpsc::Sender<Outgoing>,
    /// The outgoing queue's receiver and the first subscription, until `run` takes them.
    parts: Arc<Mutex<Option<RunParts>>>,
}

struct RunParts {
    outgoing: mpsc::Receiver<Outgoing>,
    incoming: async_nats::Subscriber,
}

impl std::fmt::Debug for NatsFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsFanout")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NatsFanout {
    /// Subscribes to the other nodes' copies before returning (the server has confirmed the
    /// subscription), so nothing another node publishes after this node has started is missed.
    pub async fn connect(client: async_nats::Client) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let incoming = client
            .subscribe(format!("{SUBJECT_PREFIX}.>"))
            .await
            .context("subscribing to the NATS live fan-out")?;
        client
            .flush()
            .await
            .context("subscribing to the NATS live fan-out")?;
        let (outgoing, rx) = mpsc::channel(OUTGOING_QUEUE);
        Ok(Self {
            client,
            node: uuid::Uuid::new_v4().simple().to_string(),
            outgoing,
            parts: Arc::new(Mutex::new(Some(RunParts {
                outgoing: rx,
                incoming,
            }))),
        })
    }

    /// Sends a copy of a message stored here to the other nodes (best effort, like NOTIFY:
    /// a subscriber that misses it resumes from the database).
    pub fn publish(&self, message: &BusMessage) {
        let kind = match message.kind {
            MessageKind::Topic => WireKind::Topic,
            MessageKind::Event => WireKind::Event,
            // Every node tails the shared history itself.
            MessageKind::System => return,
        };
        let mut wire = WireMessage {
            node: self.node.clone(),
            env_id: message.env_id.as_str().to_owned(),
            kind,
            subject: message.subject.clone(),
            id: message.id.clone(),
            sequence: message.sequence,
            data: message.data.clone(),
            timestamp: message.timestamp.0,
            by_reference: false,
        };
        let limit = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(FRAMING_BYTES);
        let mut payload = match serde_json::to_vec(&wire) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "encoding a live message for NATS");
                return;
            }
        };
        if payload.len() > limit {
            wire.data = serde_json::Value::Null;
            wire.by_reference = true;
            payload = match serde_json::to_vec(&wire) {
                Ok(p) => p,
                Err(_) => return,
            };
        }
        let subject = format!("{SUBJECT_PREFIX}.{}", message.env_id.as_str());
        match self.outgoing.try_send((subject, payload.into())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("ironflow_live_fanout_dropped_total").increment(1);
                tracing::debug!("NATS live fan-out queue full; a copy was dropped");
            }
            // `run` has stopped: the server is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Sends this node's copies and relays the other nodes' to this node's bus until shutdown.
    pub async fn run(self, engine: Engine) {
        let shutdown = engine.shutdown_token().clone();
        let taken = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(RunParts {
            mut outgoing,
            incoming,
        }) = taken
        else {
            return;
        };
        let client = self.client.clone();
        let sender = async move {
            while let Some((subject, payload)) = outgoing.recv().await {
                if let Err(e) = client.publish(subject, payload).await {
                    tracing::warn!(error = %e, "publishing a live message to NATS");
                }
            }
        };
        tokio::select! {
            () = sender => {}
            () = self.relay_incoming(incoming, &engine, &shutdown) => {}
            () = shutdown.cancelled() => {}
        }
    }

    /// Resubscribes when the subscription ends (async-nats reconnects the connection itself).
    async fn relay_incoming(
        &self,
        first: async_nats::Subscriber,
        engine: &Engine,
        shutdown: &tokio_util::sync::CancellationToken,
    ) {
        let mut first = Some(first);
        while !shutdown.is_cancelled() {
            let next = match first.take() {
                Some(s) => Ok(s),
                None => self.client.subscribe(format!("{SUBJECT_PREFIX}.>")).await,
            };
            let mut subscription = match next {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "subscribing to NATS live fan-out; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = subscription.next() => match next {
                        Some(m) => self.relay(engine, &m.payload),
                        None => break,
                    },
                }
            }
        }
    }

    fn relay(&self, engine: &Engine, payload: &[u8]) {
        let wire: WireMessage = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed NATS live message");
                return;
            }
        };
        if wire.node == self.node {
            return;
        }
        let env = EnvId::from_stored(wire.env_id);
        if wire.by_reference {
            let engine = engine.clone();
            tokio::spawn(async move {
                let stored = match wire.kind {
                    WireKind::Topic => StoredRef::Topic(wire.sequence),
                    WireKind::Event => StoredRef::Event(env, EventId::from_stored(wire.id)),
                };
                engine.relay_from_store(stored).await;
            });
            return;
        }
        let at = Ts(wire.timestamp);
        engine.bus().publish_message(match wire.kind {
            WireKind::Topic => {
                BusMessage::topic(env, wire.id, wire.sequence, wire.subject, wire.data, at)
            }
            WireKind::Event => BusMessage::event(env, wire.id, wire.subject, wire.data, at),
        });
    }
}
