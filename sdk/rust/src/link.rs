//! `Link`: one worker stream's outbound half as invocations see it — it queues messages
//! towards the server and hands each `step_ack` back to the report waiting for it (keyed by
//! the step id, or the job id for a job's result).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::proto::v1 as pb;
use pb::worker_message::Payload;

/// The error text of a report whose fence no longer holds.
const STALE: &str = "STALE_EXECUTION";

/// The server's answer to one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Durable.
    Ok,
    /// The fence no longer holds: the job was re-dispatched, cancelled or ended.
    Stale,
    /// The server refused the report (bad input) or could not commit it.
    Refused(String),
}

/// The stream closed before the answer came: the invocation is abandoned (the server gives the
/// job back, or its lease expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkClosed;

pub(crate) struct Link {
    /// `None` once the stream closed; dropping the sender ends the request stream.
    tx: Mutex<Option<mpsc::Sender<pb::WorkerMessage>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Commit>>>,
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
        }
    }

    /// Queues a message that has no answer (heartbeat, ack, nack, step started).
    pub(crate) async fn send(&self, payload: Payload) -> Result<(), LinkClosed> {
        let tx = lock(&self.tx).clone().ok_or(LinkClosed)?;
        tx.send(pb::WorkerMessage {
            payload: Some(payload),
        })
        .await
        .map_err(|_| LinkClosed)
    }

    /// Sends a report and waits for the server's `step_ack` under `key`.
    pub(crate) async fn request(
        &self,
        key: String,
        payload: Payload,
    ) -> Result<Commit, LinkClosed> {
        let (answer, answered) = oneshot::channel();
        // Registered before sending so that an answer can never arrive unclaimed.
        lock(&self.pending).insert(key.clone(), answer);
        if self.send(payload).await.is_err() {
            lock(&self.pending).remove(&key);
            return Err(LinkClosed);
        }
        answered.await.map_err(|_| LinkClosed)
    }

    /// Routes a `step_ack` to its report; unknown keys are ignored (the report gave up, e.g.
    /// its invocation was aborted).
    pub(crate) fn resolve(&self, ack: pb::StepAck) {
        let commit = if ack.accepted {
            Commit::Ok
        } else if ack.error == STALE {
            Commit::Stale
        } else {
            Commit::Refused(ack.error)
        };
        if let Some(waiter) = lock(&self.pending).remove(&ack.step_id) {
            let _ = waiter.send(commit);
        }
    }

    /// Ends the request stream and fails every waiting report with [`LinkClosed`].
    pub(crate) fn close(&self) {
        lock(&self.tx).take();
        lock(&self.pending).clear();
    }

    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        lock(&self.pending).len()
    }
}
