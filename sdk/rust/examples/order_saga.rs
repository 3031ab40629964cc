//! An order saga against a running server: reserve the stock, charge the card, ship the
//! parcel. Each step that succeeded registers its undo; when a later step fails for good the
//! undos run newest first (refund, then release the stock) and the server records them as
//! `compensate:` steps of the failed run.
//!
//! Two orders are placed: one ships, the other is refused by the carrier and is compensated.
//!
//! ```sh
//! ironflow serve --dev            # prints an API key
//! IRONFLOW_URL=http://127.0.0.1:9123 IRONFLOW_API_KEY=ifkey_... \
//!     cargo run -p ironflow-sdk --example order_saga
//! ```

use std::time::Duration;

use ironflow_sdk::{CancellationToken, Client, Ctx, Function, RetryPolicy, Run, RunStatus, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Order {
    order_id: String,
    sku: String,
    amount_cents: u64,
    /// The carrier refuses parcels to this destination.
    destination: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Shipment {
    reservation: String,
    charge: String,
    tracking: String,
}

/// Stand-ins for the inventory, payment and carrier services.
mod services {
    use ironflow_sdk::FnError;

    pub async fn reserve(sku: &str) -> Result<String, FnError> {
        Ok(format!("res_{sku}"))
    }

    pub async fn release(reservation: &str) -> Result<(), FnError> {
        println!("  undo: released {reservation}");
        Ok(())
    }

    pub async fn charge(order_id: &str, cents: u64) -> Result<String, FnError> {
        Ok(format!("ch_{order_id}_{cents}"))
    }

    pub async fn refund(charge: &str) -> Result<(), FnError> {
        println!("  undo: refunded {charge}");
        Ok(())
    }

    pub async fn ship(order_id: &str, destination: &str) -> Result<String, FnError> {
        if destination == "Atlantis" {
            // Not worth retrying: the saga has to be undone.
            return Err(
                FnError::non_retryable(format!("no carrier delivers to {destination}"))
                    .code("UNDELIVERABLE"),
            );
        }
        Ok(format!("trk_{order_id}"))
    }
}

fn saga() -> Function {
    Function::new("order-saga")
        .trigger("saga.order.placed")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 200,
            backoff_factor: 2.0,
            max_delay_ms: 2_000,
        })
        .handler(|ctx: Ctx, order: Order| async move {
            let reservation: String = ctx.run("reserve", || services::reserve(&order.sku)).await?;
            ctx.compensate("reserve", {
                let reservation = reservation.clone();
                move || async move { services::release(&reservation).await }
            });

            let charge: String = ctx
                .run("charge", || {
                    services::charge(&order.order_id, order.amount_cents)
                })
                .await?;
            ctx.compensate("charge", {
                let charge = charge.clone();
                move || async move { services::refund(&charge).await }
            });

            // A non-retryable failure here ends the run: the undos above run, newest first.
            let tracking: String = ctx
                .run("ship", || {
                    services::ship(&order.order_id, &order.destination)
                })
                .await?;
            Ok(Shipment {
                reservation,
                charge,
                tracking,
            })
        })
}

async fn settled(client: &Client, run_id: &str) -> Result<Run, Box<dyn std::error::Error>> {
    for _ in 0..300 {
        let run = client.run(run_id).await?;
        if run.status.is_terminal() {
            return Ok(run);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("run {run_id} did not end in 30 s").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("IRONFLOW_URL").unwrap_or_else(|_| "http://127.0.0.1:9123".into());
    let key = std::env::var("IRONFLOW_API_KEY")?;
    let client = Client::new(&url, &key)?;
    // Registered up front so the events below find the function (the worker registers it too).
    client.register(&saga()).await?;

    let worker = Worker::builder(&url, &key).function(saga()).build()?;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });

    let shipped = client
        .emit(
            "saga.order.placed",
            json!({"order_id": "o-1", "sku": "lamp", "amount_cents": 4200, "destination": "Lyon"}),
        )
        .await?;
    let run = settled(&client, shipped.run_ids.first().ok_or("no run")?).await?;
    println!(
        "o-1: {:?} {}",
        run.status,
        run.output.clone().unwrap_or_default()
    );
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");

    println!("o-2 (undeliverable):");
    let refused = client
        .emit(
            "saga.order.placed",
            json!({"order_id": "o-2", "sku": "desk", "amount_cents": 9900, "destination": "Atlantis"}),
        )
        .await?;
    let run = settled(&client, refused.run_ids.first().ok_or("no run")?).await?;
    println!(
        "o-2: {:?} {}",
        run.status,
        run.error.clone().unwrap_or_default()
    );
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");

    shutdown.cancel();
    serving.await??;
    Ok(())
}
