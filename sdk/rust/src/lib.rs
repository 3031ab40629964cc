//! Ironflow's Rust SDK: durable functions served by a [`Worker`] over the worker stream (gRPC,
//! ironflow-py's `WorkerService/Connect` schema), and a REST [`Client`] to emit events and read runs.
//!
//! A function's handler gets a [`Ctx`] and the triggering event's `data`. Its steps are
//! durable: `ctx.run` stores each step's output, so when the run is dispatched again (after a
//! retry, a `ctx.sleep`, a `ctx.wait_for_event` or a `ctx.invoke`) completed steps return
//! their stored output instead of running again. Handlers must therefore be deterministic in
//! the steps they call: step ids are `<run id>:<name>:<n>`, `n` counting earlier steps of the
//! same name.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ironflow_sdk::{Ctx, FnError, Function, Worker};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     id: String,
//!     amount: u64,
//! }
//!
//! #[derive(Serialize)]
//! struct Receipt {
//!     order_id: String,
//!     charge_id: String,
//! }
//!
//! # async fn example() -> Result<(), ironflow_sdk::SdkError> {
//! let bill = Function::new("bill-order")
//!     .trigger("order.created")
//!     .handler(|ctx: Ctx, order: Order| async move {
//!         let charge_id: String = ctx
//!             .run("charge", || async { Ok(format!("ch_{}_{}", order.id, order.amount)) })
//!             .await?;
//!         // Durable: the job is handed back and the run resumes in an hour, on any worker.
//!         ctx.sleep("cool-off", Duration::from_secs(3600)).await?;
//!         Ok(Receipt { order_id: order.id, charge_id })
//!     });
//!
//! let worker = Worker::builder("http://localhost:8080", "ifkey_...")
//!     .concurrency(4)
//!     .function(bill)
//!     .build()?;
//! let shutdown = CancellationToken::new();
//! worker.run(shutdown).await
//! # }
//! ```

mod client;
mod compensate;
mod ctx;
mod error;
mod function;
mod invocation;
mod link;
mod parallel;
pub mod proto;
mod wire;
mod worker;

#[cfg(test)]
mod tests;

pub use client::{
    Client, EmitResult, InvokeResult, Published, Run, RunPage, RunQuery, RunResult, RunStatus,
    SyncResult,
};
pub use ctx::{Ctx, Invoke, WaitForEvent};
pub use error::{FnError, SdkError};
pub use function::{Concurrency, Function, RetryPolicy, Trigger};
pub use parallel::Parallel;
pub use tokio_util::sync::CancellationToken;
pub use worker::{Worker, WorkerBuilder};
