//! A fan-out with `ctx.parallel` against a running server: a catalogue import splits its
//! feed into pages, fetches and parses the pages in parallel (at most four at once), each page
//! its own durable steps, then publishes a summary to a pub/sub topic.
//!
//! Every branch has its own step scope (`<run>:pages:<i>:…`), so when the run is dispatched
//! again (a retry, a worker crash) the pages already parsed replay from their stored outputs
//! and only the rest run. One page is flaky on its first attempt to show it: the retry parses
//! only that page again.
//!
//! ```sh
//! ironflow serve --dev            # prints an API key
//! IRONFLOW_URL=http://127.0.0.1:9123 IRONFLOW_API_KEY=ifkey_... \
//!     cargo run -p ironflow-sdk --example fan_out
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ironflow_sdk::{
    CancellationToken, Client, Ctx, FnError, Function, Parallel, RetryPolicy, RunStatus, Worker,
};
use serde::Deserialize;
use serde_json::json;

/// How many page bodies were parsed in this process, across attempts.
static PARSED: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Deserialize)]
struct Import {
    feed: String,
    pages: u32,
}

async fn parse_page(ctx: &Ctx, feed: &str, page: u32) -> Result<u32, FnError> {
    if page == 3 && ctx.attempt() == 1 {
        return Err(FnError::retryable(format!(
            "{feed} page {page}: upstream timed out"
        )));
    }
    PARSED.fetch_add(1, Ordering::SeqCst);
    // Stand-in for fetching and parsing: page n holds 10 + n products.
    Ok(10 + page)
}

fn import() -> Function {
    Function::new("catalogue-import")
        .trigger("catalogue.import.requested")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_delay_ms: 200,
            backoff_factor: 2.0,
            max_delay_ms: 2_000,
        })
        .handler(|ctx: Ctx, import: Import| async move {
            let feed = import.feed.clone();
            let branches = (0..import.pages).map(|page| {
                let feed = feed.clone();
                move |branch: Ctx| async move {
                    branch
                        .run("parse", || parse_page(&branch, &feed, page))
                        .await
                }
            });
            let counts: Vec<u32> = ctx
                .parallel(Parallel::new("pages").concurrency(4), branches)
                .await?;
            let products: u32 = counts.iter().sum();
            ctx.publish(
                "catalogue.imported",
                json!({"feed": import.feed, "pages": counts.len(), "products": products}),
            )
            .await?;
            Ok(json!({"pages": counts, "products": products}))
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("IRONFLOW_URL").unwrap_or_else(|_| "http://127.0.0.1:9123".into());
    let key = std::env::var("IRONFLOW_API_KEY")?;
    let client = Client::new(&url, &key)?;
    client.register(&import()).await?;

    let worker = Worker::builder(&url, &key)
        .concurrency(4)
        .function(import())
        .build()?;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });

    let sync = client
        .trigger_sync(
            "catalogue.import.requested",
            json!({"feed": "spring", "pages": 8}),
            Duration::from_secs(30),
        )
        .await?;
    let result = sync.results.first().ok_or("no run triggered")?;
    println!("import: {:?} {:?}", result.status, result.output);
    assert_eq!(result.status, RunStatus::Completed);
    // 8 pages parsed once each, plus nothing more: the retry replayed the 7 that had
    // succeeded (page 3 failed on attempt 1, before it was parsed).
    assert_eq!(PARSED.load(Ordering::SeqCst), 8);

    shutdown.cancel();
    serving.await??;
    Ok(())
}
