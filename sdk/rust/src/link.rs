//! `Link`: one worker stream's outbound half as invocations see it — it numbers requests,
//! queues them towards the server and hands each `Committed` answer back to the request that
//! is waiting for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::proto::v1 as pb;
use pb::worker_message::Kind;

/// The server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Durable.
    Ok,
    /// The fence no longer holds: the job was re-dispatched, cancelled or ended.
    Stale,
    /// The server refused the request (bad input) or could not commit it.
    Refused(String),
}

/// The stream closed before the answer came: the invocation is abandoned (the server gives the
/// job back, or its lease expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkClosed;

pub(crate) struct Link {
    /// `None` once the stream closed; dropping the sender ends the request stream.
    tx: Mutex<Option<mpsc::Sender<pb::WorkerMessage>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Commit>>>,
    next_request: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can panic half-way through an update.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    pub(crate) fn new(tx: mpsc::Sender<pb::WorkerMessage>) -> Self {
        Self {
            tx: Mutex::new(Some(tx)),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        }
    }

    /// Queues a message that has no answer (credit, heartbeat, drain).
    pub(crate) async fn send(&self, kind: Kind) -> Result<(), LinkClosed> {
        let tx = lock(&self.tx).clone().ok_or(LinkClosed)?;
        tx.send(pb::WorkerMessage { kind: Some(kind) })
            .await
            .map_err(|_| LinkClosed)
    }

    /// Sends a request built with a fresh request id and waits for the server's `Committed`.
    pub(crate) async fn request(
        &self,
        build: impl FnOnce(u64) -> Kind,
    ) -> Result<Commit, LinkClosed> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        // Registered before sending so that an answer can never arrive unclaimed.
        lock(&self.pending).insert(id, answer);
        if self.send(build(id)).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(LinkClosed);
        }
        answered.await.map_err(|_| LinkClosed)
    }

    /// Routes a `Committed` from the server to its request; unknown ids are ignored (the
    /// request gave up, e.g. its invocation was aborted).
    pub(crate) fn resolve(&self, committed: pb::Committed) {
        let commit = if committed.ok {
            Commit::Ok
        } else if committed.stale {
            Commit::Stale
        } else {
            Commit::Refused(committed.error)
        };
        if let Some(waiter) = lock(&self.pending).remove(&committed.request_id) {
            let _ = waiter.send(commit);
        }
    }

    /// Ends the request stream and fails every waiting request with [`LinkClosed`].
    pub(crate) fn close(&self) {
        lock(&self.tx).take();
        lock(&self.pending).clear();
    }

    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        lock(&self.pending).len()
    }
}
