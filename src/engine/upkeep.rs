//! Database upkeep in the background: the planner's statistics of the hot tables, refreshed
//! when they have changed a lot (see `Store::refresh_statistics`).

use std::time::Duration;

use super::Engine;

/// How often the hot tables' change counters are looked at.
const STATISTICS_CHECK: Duration = Duration::from_secs(2);

impl Engine {
    pub(crate) async fn run_statistics_upkeep(&self) {
        let mut tick = tokio::time::interval(STATISTICS_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown_token().cancelled() => return,
            }
            if let Err(e) = self.store().refresh_statistics().await {
                tracing::debug!(error = %e, "refreshing planner statistics failed");
            }
        }
    }
}
