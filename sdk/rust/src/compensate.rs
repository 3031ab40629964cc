//! `Ctx::compensate` (registering an undo for a step) and running the undos, newest first,
//! when a run fails for good; each undo is reported as a step `compensate:<step>` of type
//! `compensate` with the job's failure.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::ctx::Ctx;
use crate::error::FnError;
use crate::proto::v1 as pb;

/// A registered undo.
pub(crate) type Undo = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), FnError>> + Send>;

impl Ctx {
    /// Registers `undo` for the step `step_name` (usually right after that step succeeded).
    ///
    /// When the run fails for good — a non-retryable error, or a retryable one on the last
    /// attempt — the undos registered by this invocation run newest first before the failure
    /// is reported, and each is recorded as a step `compensate:<step_name>`. A failed undo is
    /// recorded as failed and the others still run. Undos cannot wait: `sleep`,
    /// `wait_for_event` and `invoke` fail inside them. Because handlers replay, an undo
    /// registered before a `sleep` is registered again on resume, and an undo already recorded
    /// as completed is not run twice.
    pub fn compensate<F, Fut>(&self, step_name: &str, undo: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), FnError>> + Send + 'static,
    {
        let undo: Undo = Box::new(move || undo().boxed());
        self.compensations()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((step_name.to_owned(), undo));
    }
}

/// Runs the registered undos newest first and returns their step records. Step ids come from
/// the run's root scope: handler step names cannot start with `compensate:` (their `:` would be
/// escaped), so they do not collide.
pub(crate) async fn run_compensations(ctx: &Ctx) -> Vec<pb::ExecutedStep> {
    let undos = std::mem::take(
        &mut *ctx
            .compensations()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let ids = ctx.root();
    let mut records = Vec::new();
    ctx.set_compensating(true);
    for (step_name, undo) in undos.into_iter().rev() {
        let name = format!("compensate:{step_name}");
        let step_id = ids.next_step_id(&name);
        if ctx.is_completed(&step_id) {
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = AssertUnwindSafe(undo()).catch_unwind().await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.message().to_owned()),
            Err(_) => Some("the compensation panicked".to_owned()),
        };
        if let Some(message) = &error {
            tracing::warn!(
                run_id = ctx.run_id(),
                step = step_name,
                message,
                "a compensation failed"
            );
        }
        records.push(pb::ExecutedStep {
            id: step_id,
            name,
            r#type: "compensate".into(),
            status: if error.is_none() {
                "completed"
            } else {
                "failed"
            }
            .into(),
            error: error.map(|message| pb::Error {
                message,
                retryable: false,
                ..Default::default()
            }),
            compensation_for: step_name,
            duration_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            ..Default::default()
        });
    }
    ctx.set_compensating(false);
    records
}
