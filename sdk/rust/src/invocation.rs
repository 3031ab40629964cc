//! One invocation of a handler for one job assignment: runs the handler until it returns,
//! panics or is ended from outside (a yield, a stale fence, a cancellation, a broken stream),
//! runs the compensations when it failed for good, and reports the result (`job_completed` /
//! `job_failed`) under the job's fence.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError};

use futures::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::compensate::run_compensations;
use crate::ctx::Ctx;
use crate::error::FnError;
use crate::function::Handler;
use crate::link::Commit;
use crate::proto::v1 as pb;
use pb::worker_message::Payload;

/// Why an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The handler returned `Ok` and the server committed the output.
    Completed,
    /// The handler returned `Err` (or panicked) and the server committed the failure.
    Failed,
    /// A step handed the job back (sleep, wait, invoke) and the server committed it.
    Yielded,
    /// The fence no longer holds: the run was cancelled, timed out or re-dispatched.
    Stale,
    /// The server cancelled the job (`CancelJob`).
    Cancelled,
    /// The stream broke or the worker stopped before the server answered.
    Abandoned,
    /// The server refused the final report.
    Refused(String),
}

/// The invocation's "it is over" signal, set from a step (yield, stale), the stream
/// (`CancelJob`, disconnect) or the worker (shutdown grace passed). The first reason wins.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    token: CancellationToken,
    reason: Mutex<Option<Ended>>,
}

impl Ending {
    pub(crate) fn end(&self, why: Ended) {
        {
            let mut reason = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
            if reason.is_none() {
                *reason = Some(why);
            }
        }
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Ended {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(Ended::Abandoned)
    }

    async fn ended(&self) {
        self.token.cancelled().await;
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}

/// Runs `handler` for the job in `ctx` and reports its result; returns why it ended.
pub(crate) async fn invoke(ctx: Ctx, handler: Handler) -> Ended {
    let data = ctx.event().get("data").cloned().unwrap_or(Value::Null);
    let ending = ctx.ending().clone();
    let running = AssertUnwindSafe(handler(ctx.clone(), data)).catch_unwind();
    let result = tokio::select! {
        // Checked first: once a step ended the invocation, the handler is never polled again.
        biased;
        () = ending.ended() => return ending.reason(),
        result = running => result,
    };
    let result = result.unwrap_or_else(|panic| {
        let message = panic_message(panic.as_ref());
        tracing::error!(
            run_id = ctx.run_id(),
            panic = message,
            "the handler panicked"
        );
        Err(FnError::retryable(format!("the handler panicked: {message}")).code("PANIC"))
    });
    let compensations = match &result {
        Err(e) if ctx.failure_is_final(e.is_retryable()) => {
            // Raced with the ending: an undo whose step cannot commit (the stream broke, the
            // run was cancelled) never returns.
            tokio::select! {
                biased;
                () = ending.ended() => return ending.reason(),
                steps = run_compensations(&ctx) => steps,
            }
        }
        _ => Vec::new(),
    };
    if !ctx.claim_final() {
        // A step's yield is in flight; it decides how this ends.
        ending.ended().await;
        return ending.reason();
    }
    report(&ctx, result, compensations).await
}

/// Sends the job's result and waits for its `step_ack` (keyed by the job id). Not raced with
/// the ending signal: a `cancel` the server sends because this very result ended the run must
/// not drop it.
async fn report(
    ctx: &Ctx,
    result: Result<Value, FnError>,
    compensations: Vec<pb::ExecutedStep>,
) -> Ended {
    let job = ctx.job();
    let (message, done) = match result {
        Ok(output) => {
            let (output, output_value) = crate::wire::output_pair(&output);
            (
                Payload::JobCompleted(pb::JobCompleted {
                    job_id: job.job_id.clone(),
                    output,
                    output_value,
                    duration_ms: 0,
                    execution_seq: job.execution_seq,
                    lease_token: job.lease_token.clone(),
                }),
                Ended::Completed,
            )
        }
        Err(e) => (
            Payload::JobFailed(pb::JobFailed {
                job_id: job.job_id.clone(),
                error: Some(e.to_proto()),
                duration_ms: 0,
                steps: compensations,
                execution_seq: job.execution_seq,
                lease_token: job.lease_token.clone(),
            }),
            Ended::Failed,
        ),
    };
    let answer = ctx.link().request(job.job_id.clone(), message).await;
    let ended = match answer {
        Ok(Commit::Ok) => done,
        Ok(Commit::Stale) => Ended::Stale,
        Ok(Commit::Refused(message)) => Ended::Refused(message),
        Err(_) => Ended::Abandoned,
    };
    ctx.ending().end(ended.clone());
    ended
}
