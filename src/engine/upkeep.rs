//! Database upkeep in the background: the planner's statistics of the hot tables, refreshed
//! when they have changed a lot (see `Store::refresh_statistics`), audit entries past their
//! organisation's retention removed, and the history's retention pass (partitions made ahead,
//! expired ranges removed).

use std::time::Duration;

use super::Engine;

/// How often the hot tables' change counters are looked at.
const STATISTICS_CHECK: Duration = Duration::from_secs(2);
/// Expired audit entries are looked for every this many statistics checks (a minute).
const AUDIT_SWEEP_EVERY: u32 = 30;
/// A retention pass runs at start (partitions for the coming months) and every this many
/// checks (five minutes).
const RETENTION_EVERY: u32 = 150;

impl Engine {
    pub(crate) async fn run_statistics_upkeep(&self) {
        let mut tick = tokio::time::interval(STATISTICS_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown_token().cancelled() => return,
            }
            if let Err(e) = self.store().refresh_statistics().await {
                tracing::debug!(error = %e, "refreshing planner statistics failed");
            }
            ticks = ticks.wrapping_add(1);
            if ticks % RETENTION_EVERY == 1 {
                match self.run_retention(crate::domain::time::Ts::now()).await {
                    Ok(report)
                        if report.removed.total() > 0 || !report.partitions_dropped.is_empty() =>
                    {
                        tracing::info!(
                            runs = report.removed.runs,
                            events = report.removed.events,
                            history = report.removed.history,
                            partitions_dropped = ?report.partitions_dropped,
                            "retention removed expired history"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "the retention pass failed"),
                }
            }
            if ticks % AUDIT_SWEEP_EVERY != 1 {
                continue;
            }
            match self.sweep_audit().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "audit entries past their retention removed"),
                Err(e) => tracing::warn!(error = %e, "removing expired audit entries failed"),
            }
        }
    }
}
