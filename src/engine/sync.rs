//! Direct invocation and synchronous triggers: the request parks on the bus until the runs it
//! started end (no polling loop), or its timeout passes and the runs keep going.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::ids::{EnvId, FunctionId, RunId};
use crate::store::runs::RunRecord;

use super::{EmitEvent, EmitResult, Engine, EngineError};

/// The name of the event recorded when a function is invoked directly.
pub const INVOKED_EVENT: &str = "ironflow/function.invoked";

/// The longest a sync request may wait; longer requests should poll the run instead.
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_SYNC_WAIT: Duration = Duration::from_secs(30);

/// Runs as a sync caller sees them: finished ones, and those still going when time ran out.
#[derive(Debug)]
pub struct SyncOutcome {
    pub emitted: EmitResult,
    pub runs: Vec<RunRecord>,
    pub timed_out: HashSet<RunId>,
    pub waited: Duration,
}

impl SyncOutcome {
    /// Why a run is missing from the finished ones: it is still running after the wait.
    pub fn still_running_message(&self, run: &RunId) -> Option<String> {
        self.timed_out.contains(run).then(|| {
            format!(
                "run {run} did not finish within {} ms; it is still running",
                self.waited.as_millis()
            )
        })
    }
}

impl Engine {
    /// Starts one run of `function` (any active function, whatever its triggers).
    pub async fn invoke_function(
        &self,
        env: &EnvId,
        function: &FunctionId,
        data: Value,
        idempotency_key: Option<String>,
    ) -> Result<EmitResult, EngineError> {
        super::events::check_client_key(idempotency_key.as_deref())?;
        let target = self.get_function(env, function).await?;
        let event = EmitEvent {
            name: INVOKED_EVENT.to_owned(),
            data,
            metadata: serde_json::json!({"function_id": function}),
            idempotency_key,
            source: "invoke".to_owned(),
            version: 0,
            emitted_by_run: None,
        };
        self.emit_to(env, event, Some(target)).await
    }

    /// Emits and waits for every triggered run to end.
    pub async fn trigger_sync(
        &self,
        env: &EnvId,
        event: EmitEvent,
        timeout: Duration,
    ) -> Result<SyncOutcome, EngineError> {
        let finished = self.bus().subscribe_runs();
        let started = tokio::time::Instant::now();
        let emitted = self.emit(env, event).await?;
        self.await_runs(env, emitted, finished, started, timeout)
            .await
    }

    /// Invokes a function and waits for its run to end.
    pub async fn invoke_sync(
        &self,
        env: &EnvId,
        function: &FunctionId,
        data: Value,
        idempotency_key: Option<String>,
        timeout: Duration,
    ) -> Result<SyncOutcome, EngineError> {
        let finished = self.bus().subscribe_runs();
        let started = tokio::time::Instant::now();
        let emitted = self
            .invoke_function(env, function, data, idempotency_key)
            .await?;
        self.await_runs(env, emitted, finished, started, timeout)
            .await
    }

    async fn await_runs(
        &self,
        env: &EnvId,
        emitted: EmitResult,
        mut finished: tokio::sync::broadcast::Receiver<RunId>,
        started: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<SyncOutcome, EngineError> {
        let timeout = if timeout.is_zero() {
            DEFAULT_SYNC_WAIT
        } else {
            timeout.min(MAX_SYNC_WAIT)
        };
        let deadline = started + timeout;
        let mut pending: HashSet<RunId> = emitted.run_ids.iter().cloned().collect();
        // Runs may have ended before we looked (or on another node before we subscribed).
        self.drop_ended(env, &mut pending).await?;
        while !pending.is_empty() {
            tokio::select! {
                received = finished.recv() => match received {
                    Ok(run) if pending.contains(&run) || run.as_str() == super::bus::ANY_RUN => {
                        self.drop_ended(env, &mut pending).await?;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.drop_ended(env, &mut pending).await?,
                    Err(RecvError::Closed) => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = self.shutdown_token().cancelled() => break,
            }
        }
        let mut runs = Vec::with_capacity(emitted.run_ids.len());
        for id in &emitted.run_ids {
            runs.push(self.get_run(env, id).await?);
        }
        Ok(SyncOutcome {
            emitted,
            runs,
            timed_out: pending,
            waited: started.elapsed(),
        })
    }

    async fn drop_ended(
        &self,
        env: &EnvId,
        pending: &mut HashSet<RunId>,
    ) -> Result<(), EngineError> {
        let mut ended = Vec::new();
        for id in pending.iter() {
            if self.get_run(env, id).await?.status.is_terminal() {
                ended.push(id.clone());
            }
        }
        for id in ended {
            pending.remove(&id);
        }
        Ok(())
    }
}
