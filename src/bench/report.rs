//! What `ironflow bench` prints: one summary line, and with `--json` one JSON object as the
//! last line (scripts read it).

use std::time::Duration;

use serde::Serialize;

/// Latency samples, summarised as percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (nearest rank) in milliseconds; 0 without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len()) - 1;
        sorted[index].as_secs_f64() * 1000.0
    }
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub backend: &'static str,
    pub workflows: usize,
    pub steps: usize,
    pub concurrency: usize,
    /// Server nodes on the one database, a worker each.
    pub nodes: usize,
    /// Where the SDK worker ran: "own process" or "in-process".
    pub worker: &'static str,
    pub backlog_runs: u64,
    pub backlog_history: u64,
    pub backlog_seed_secs: f64,
    pub elapsed_secs: f64,
    pub steps_per_sec: f64,
    pub runs_per_sec: f64,
    pub raw_commits_per_sec: f64,
    pub ratio_vs_raw_commits: f64,
    pub step_commit_p50_ms: f64,
    pub step_commit_p99_ms: f64,
    pub event_to_start_p50_ms: f64,
    pub event_to_start_p99_ms: f64,
    pub sync_trigger_p50_ms: f64,
    pub sync_trigger_p99_ms: f64,
    pub latency_samples: usize,
    /// Sent by the server over the throughput phase, per durable step.
    pub statements_per_step: f64,
    pub commits_per_step: f64,
    /// Over the throughput phase; absent where `/proc` is not.
    pub cpu: Option<super::CpuPerStep>,
}

impl BenchReport {
    /// One line of figures, then one of counters.
    pub fn summary_line(&self) -> String {
        let backlog = if self.backlog_runs > 0 {
            format!(
                " behind a backlog of {} queued runs and {} history rows (seeded in {:.1} s)",
                self.backlog_runs, self.backlog_history, self.backlog_seed_secs
            )
        } else {
            String::new()
        };
        let cpu = match self.cpu {
            Some(c) => format!(
                "; CPU per step: server {:.0} us, worker {}, rest (database) {:.0} us; machine {:.0}% busy",
                c.server_us,
                c.worker_us
                    .map_or_else(|| "in the server's".to_owned(), |w| format!("{w:.0} us")),
                c.rest_us,
                c.machine_busy_pct,
            ),
            None => String::new(),
        };
        let figures = format!(
            "ironflow bench [{}] {} node(s), {} workflows x {} steps, C={}: {:.0} durable steps/s, {:.0} runs/s; \
             raw single-row commits {:.0}/s (ratio {:.2}); step commit p50 {:.2} ms p99 {:.2} ms; \
             event->first step p50 {:.2} ms p99 {:.2} ms; sync 1-step trigger p50 {:.2} ms p99 {:.2} ms",
            self.backend,
            self.nodes,
            self.workflows,
            self.steps,
            self.concurrency,
            self.steps_per_sec,
            self.runs_per_sec,
            self.raw_commits_per_sec,
            self.ratio_vs_raw_commits,
            self.step_commit_p50_ms,
            self.step_commit_p99_ms,
            self.event_to_start_p50_ms,
            self.event_to_start_p99_ms,
            self.sync_trigger_p50_ms,
            self.sync_trigger_p99_ms,
        );
        format!(
            "{figures}\nironflow bench counters (worker {}{backlog}): {:.2} statements and {:.2} commits per step{cpu}",
            self.worker, self.statements_per_step, self.commits_per_step,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert!((s.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((s.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((s.percentile_ms(100.0) - 100.0).abs() < 1e-9);
        assert_eq!(Samples::default().percentile_ms(50.0), 0.0);
    }
}
