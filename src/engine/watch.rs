//! KV and config watches. A KV watch first sends the newest value of every (matching) key,
//! then every later put and delete in revision order. On the database backend the updates
//! are copies of the durable rows: the watcher wakes on the bus (a local write, or another
//! node's NOTIFY) and reads the bucket's rows after the last revision it sent, so a burst is
//! delivered in order without gaps. A revision pruned before the watcher read it (the
//! bucket keeps `history` revisions per key) is superseded by a newer one of the same key,
//! which the watcher then sends. A config watch sends the current document, then each
//! `config.updated` / `config.deleted` history entry (read by the history tailer).

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::domain::kv::{key_filter, validate_bucket};
use crate::domain::pattern::EventPattern;
use crate::ids::EnvId;
use crate::store::model::KvEntry;
use crate::store::time::Ts;

use super::kv::KvBackend;
use super::{Engine, EngineError, MessageKind};

/// Rows a watcher reads per round.
const BATCH: i64 = 500;
/// The watcher reads again at least this often, in case a wakeup was missed.
const SWEEP: Duration = Duration::from_secs(2);

/// One put or delete seen by a KV watch.
#[derive(Debug, Clone)]
pub struct KvWatchEvent {
    pub bucket: String,
    pub entry: KvEntry,
}

/// A running KV watch; dropping it stops it.
pub struct KvWatch {
    rx: mpsc::Receiver<Result<KvWatchEvent, EngineError>>,
}

impl KvWatch {
    pub(crate) fn new(rx: mpsc::Receiver<Result<KvWatchEvent, EngineError>>) -> Self {
        Self { rx }
    }

    /// The next update; `None` when the server stops. An error ends the watch (for example,
    /// the bucket was deleted).
    pub async fn next(&mut self) -> Option<Result<KvWatchEvent, EngineError>> {
        self.rx.recv().await
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
        let pattern = key
            .map(key_filter)
            .transpose()
            .map_err(EngineError::InvalidArgument)?;
        if let KvBackend::Nats(nats) = &self.options().kv {
            return nats
                .watch(env, bucket, key, self.shutdown_token().clone())
                .await;
        }
        // Enabled before the first read, so no write after it goes unnoticed.
        let changes = self.bus().kv_changes();
        let start = self
            .store()
            .kv_revision(env, bucket)
            .await?
            .ok_or_else(|| EngineError::not_found("bucket", bucket))?;
        let (tx, rx) = mpsc::channel(256);
        let engine = self.clone();
        let env = env.clone();
        let bucket = bucket.to_owned();
        tokio::spawn(async move {
            engine
                .tail_bucket(&env, &bucket, pattern, start, changes, tx)
                .await;
        });
        Ok(KvWatch::new(rx))
    }

    async fn tail_bucket(
        &self,
        env: &EnvId,
        bucket: &str,
        pattern: Option<EventPattern>,
        start: i64,
        changes: std::sync::Arc<tokio::sync::Notify>,
        tx: mpsc::Sender<Result<KvWatchEvent, EngineError>>,
    ) {
        let wanted = |e: &KvEntry| pattern.as_ref().is_none_or(|p| p.matches(&e.key));
        let send = |entry: KvEntry| {
            tx.send(Ok(KvWatchEvent {
                bucket: bucket.to_owned(),
                entry,
            }))
        };
        let snapshot = match self.store().kv_live_entries(env, bucket).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        for entry in snapshot {
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
                let rows = match self
                    .store()
                    .kv_entries_after(env, bucket, last, BATCH)
                    .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let full = rows.len() as i64 == BATCH;
                if rows.is_empty() {
                    // The bucket may have been deleted meanwhile (and maybe created again: its
                    // revisions then start over, below what this watch has sent).
                    match self.store().kv_revision(env, bucket).await {
                        Ok(Some(revision)) if revision >= last => {}
                        Ok(_) => {
                            let _ = tx.send(Err(EngineError::not_found("bucket", bucket))).await;
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
                () = tokio::time::sleep(SWEEP) => {}
                () = tx.closed() => return,
                () = self.shutdown_token().cancelled() => return,
            }
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
