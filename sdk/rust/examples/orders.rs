//! An end-to-end tour against a running server: a worker serving an order workflow (a step, a
//! durable sleep, a wait for an event, a child invocation, a fire-and-forget child), a
//! function that fails once and is retried with its step memoized, and a cancelled run.
//!
//! ```sh
//! IRONFLOW_URL=http://127.0.0.1:9123 IRONFLOW_API_KEY=ifkey_... \
//!     cargo run -p ironflow-sdk --example orders
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ironflow_sdk::{
    CancellationToken, Client, Ctx, FnError, Function, Invoke, RetryPolicy, Run, RunStatus,
    WaitForEvent, Worker,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Order {
    order_id: String,
    amount: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    text: String,
}

/// How often the `flaky` function's step body ran, across attempts.
static FLAKY_STEP_RUNS: AtomicU32 = AtomicU32::new(0);

fn functions() -> Vec<Function> {
    let bill = Function::new("sdk-bill")
        .trigger("sdk.order.created")
        .handler(|ctx: Ctx, order: Order| async move {
            let charge: String = ctx
                .run("charge", || async {
                    Ok(format!("ch_{}_{}", order.order_id, order.amount))
                })
                .await?;
            ctx.sleep("settle", Duration::from_secs(1)).await?;
            let shipped = ctx
                .wait_for_event(
                    "shipped",
                    WaitForEvent::new("sdk.order.shipped")
                        .match_path("data.order_id")
                        .timeout(Duration::from_secs(60)),
                )
                .await?;
            let receipt: Receipt = ctx
                .invoke(
                    "receipt",
                    Invoke::new("sdk-receipt", json!({"charge": charge}))
                        .timeout(Duration::from_secs(30)),
                )
                .await?;
            let audit_run = ctx
                .invoke_async("audit", Invoke::new("sdk-audit", json!({"charge": charge})))
                .await?;
            Ok(json!({
                "charge": charge,
                "carrier": shipped.map(|e| e["data"]["carrier"].clone()),
                "receipt": receipt.text,
                "audit_run": audit_run,
            }))
        });
    let receipt = Function::new("sdk-receipt").handler(|ctx: Ctx, input: Value| async move {
        let text: String = ctx
            .run("render", || async move {
                Ok(format!(
                    "paid with {}",
                    input["charge"].as_str().unwrap_or("?")
                ))
            })
            .await?;
        Ok(Receipt { text })
    });
    let audit = Function::new("sdk-audit")
        .handler(|_: Ctx, input: Value| async move { Ok::<_, FnError>(input) });
    let flaky = Function::new("sdk-flaky")
        .trigger("sdk.flaky")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 100,
            backoff_factor: 2.0,
            max_delay_ms: 1_000,
        })
        .handler(|ctx: Ctx, _: Value| async move {
            let token: u32 = ctx
                .run("expensive", || async {
                    Ok(FLAKY_STEP_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
                })
                .await?;
            if ctx.attempt() == 1 {
                return Err(FnError::retryable("first attempt fails").code("FLAKY"));
            }
            Ok(json!({"attempt": ctx.attempt(), "token": token}))
        });
    let slow =
        Function::new("sdk-slow")
            .trigger("sdk.slow")
            .handler(|ctx: Ctx, _: Value| async move {
                ctx.run("forever", || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(())
                })
                .await?;
                Ok::<_, FnError>(json!("unreachable"))
            });
    vec![bill, receipt, audit, flaky, slow]
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ironflow_sdk=debug".into()),
        )
        .init();
    let url = std::env::var("IRONFLOW_URL").unwrap_or_else(|_| "http://127.0.0.1:9123".into());
    let key = std::env::var("IRONFLOW_API_KEY")?;

    let mut builder = Worker::builder(&url, &key).concurrency(4);
    for f in functions() {
        builder = builder.function(f);
    }
    let worker = builder.build()?;
    println!("worker {}", worker.worker_id());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });
    let client = Client::new(&url, &key)?;
    // The worker registers its functions before it connects.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let emitted = client
        .emit(
            "sdk.order.created",
            json!({"order_id": "o-1", "amount": 42}),
        )
        .await?;
    let bill_run = emitted.run_ids.first().ok_or("no run triggered")?.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .emit(
            "sdk.order.shipped",
            json!({"order_id": "o-1", "carrier": "UPS"}),
        )
        .await?;
    let run = settled(&client, &bill_run).await?;
    println!(
        "sdk-bill: {:?} {}",
        run.status,
        run.output.clone().unwrap_or_default()
    );
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");

    let sync = client
        .trigger_sync("sdk.flaky", json!({}), Duration::from_secs(20))
        .await?;
    let result = sync.results.first().ok_or("no flaky run")?;
    println!("sdk-flaky: {:?} {:?}", result.status, result.output);
    assert_eq!(result.status, RunStatus::Completed);
    assert_eq!(
        FLAKY_STEP_RUNS.load(Ordering::SeqCst),
        1,
        "the step ran once"
    );

    let slow = client.emit("sdk.slow", json!({})).await?;
    let slow_run = slow.run_ids.first().ok_or("no slow run")?.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cancelled = client.cancel(&slow_run).await?;
    println!("sdk-slow: {:?}", cancelled.status);
    assert_eq!(cancelled.status, RunStatus::Cancelled);

    shutdown.cancel();
    serving.await??;
    println!("all good");
    Ok(())
}
