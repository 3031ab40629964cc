//! KV and config watches. A KV watch first sends the newest value of every (matching) key,
//! then every later put and delete in revision order. On the database backend the updates
//! are copies of the durable rows: the watcher wakes on the bus (a local write, or another
//! node's NOTIFY) and reads the bucket's rows after the last revision it sent, so a burst is
//! delivered in order without gaps. A revision pruned before the watcher read it (the
//! bucket keeps `history` revisions per key) is superseded by a newer one of the same key,
//! which the watcher then sends. A config watch sends the current document, then each
//! `config.updated` / `config.deleted` history entry (read by the history tailer).

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::domain::kv::{key_filter, validate_bucket};
use crate::domain::time::Ts;
use crate::ids::EnvId;
pub use crate::store::kv::KvWatchEvent;
use crate::store::kv::{InBucket, KvWatchEnd, KvWatchStream};

use super::{Engine, EngineError, MessageKind};

/// A running KV watch; dropping it stops it.
pub struct KvWatch {
    rx: KvWatchStream,
    bucket: String,
}

impl KvWatch {
    /// The next update; `None` when the server stops. An error ends the watch (for example,
    /// the bucket was deleted).
    pub async fn next(&mut self) -> Option<Result<KvWatchEvent, EngineError>> {
        let next = self.rx.recv().await?;
        Some(next.map_err(|end| match end {
            KvWatchEnd::BucketDeleted => EngineError::not_found("bucket", &self.bucket),
            KvWatchEnd::Failed(e) => EngineError::Store(e),
        }))
    }
}

/// One change seen by a config watch (`data` is `None` when the document was deleted).
#[derive(Debug, Clone)]
pub struct ConfigWatchEvent {
    pub name: String,
    pub data: Option<serde_json::Value>,
    pub revision: i64,
    pub updated_at: Ts,
}

/// A running config watch; dropping it stops it.
pub struct ConfigWatch {
    rx: mpsc::Receiver<ConfigWatchEvent>,
}

impl ConfigWatch {
    pub async fn next(&mut self) -> Option<ConfigWatchEvent> {
        self.rx.recv().await
    }
}

impl Engine {
    /// Watches a bucket, optionally only the keys matching a NATS wildcard pattern
    /// (`user.*`). Fails at once when the bucket does not exist or the pattern is bad.
    pub async fn kv_watch(
        &self,
        env: &EnvId,
        bucket: &str,
        key: Option<&str>,
    ) -> Result<KvWatch, EngineError> {
        validate_bucket(bucket).map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
        if let Some(filter) = key {
            key_filter(filter).map_err(EngineError::InvalidArgument)?;
        }
        // Enabled before the first read, so no write after it goes unnoticed.
        let changes = self.bus().kv_changes();
        let stream = self
            .kv()
            .kv_watch(env, bucket, key, changes, self.shutdown_token().clone())
            .await?;
        match stream {
            InBucket::Found(rx) => Ok(KvWatch {
                rx,
                bucket: bucket.to_owned(),
            }),
            InBucket::NoSuchBucket => Err(EngineError::not_found("bucket", bucket)),
        }
    }

    /// Watches one config document: its current state first (when it exists), then every
    /// change recorded in the history.
    pub async fn config_watch(&self, env: &EnvId, name: &str) -> Result<ConfigWatch, EngineError> {
        // Subscribed before reading, so no change after the read goes unnoticed.
        let mut live = self.bus().subscribe_messages();
        let from = self.store().max_history_seq().await?;
        self.bus().follow_history_from(from);
        let current = match self.config_get(env, name).await {
            Ok(c) => Some(c),
            Err(EngineError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let (tx, rx) = mpsc::channel(64);
        let engine = self.clone();
        let env = env.clone();
        let name = name.to_owned();
        let updated = format!("system.config.{name}.updated");
        let deleted = format!("system.config.{name}.deleted");
        tokio::spawn(async move {
            let mut last = 0;
            if let Some(c) = current {
                last = c.revision;
                let first = ConfigWatchEvent {
                    name: c.name,
                    data: Some(c.data),
                    revision: c.revision,
                    updated_at: c.updated_at,
                };
                if tx.send(first).await.is_err() {
                    return;
                }
            }
            loop {
                let message = tokio::select! {
                    m = live.recv() => m,
                    () = tx.closed() => return,
                    () = engine.shutdown_token().cancelled() => return,
                };
                let event = match message {
                    Ok(m) if m.kind == MessageKind::System && m.env_id == env => {
                        let payload = &m.data["payload"];
                        let revision = payload["revision"].as_i64().unwrap_or(0);
                        if m.subject == updated && revision > last {
                            last = revision;
                            ConfigWatchEvent {
                                name: name.clone(),
                                data: Some(payload["data"].clone()),
                                revision,
                                updated_at: m.timestamp,
                            }
                        } else if m.subject == deleted {
                            // A re-created document starts again at revision 1.
                            last = 0;
                            ConfigWatchEvent {
                                name: name.clone(),
                                data: None,
                                revision,
                                updated_at: m.timestamp,
                            }
                        } else {
                            continue;
                        }
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match engine.config_get(&env, &name).await {
                        Ok(c) if c.revision != last => {
                            last = c.revision;
                            ConfigWatchEvent {
                                name: c.name,
                                data: Some(c.data),
                                revision: c.revision,
                                updated_at: c.updated_at,
                            }
                        }
                        _ => continue,
                    },
                    Err(RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(ConfigWatch { rx })
    }
}
