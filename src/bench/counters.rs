//! The counters `ironflow bench` reads around its throughput phase: CPU time from `/proc`
//! (Linux; elsewhere the CPU figures are absent) for the machine, the bench's own process (the
//! server) and the worker's, and the statements and commits the server sent to its database.

use crate::store::sql::RoundTrips;

/// Linux reports CPU time in USER_HZ ticks, which is 100 on every platform it supports.
const MICROS_PER_TICK: f64 = 10_000.0;

/// CPU ticks used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTicks {
    /// All CPUs, busy (everything but idle and iowait).
    pub machine_busy: u64,
    /// All CPUs, every state.
    pub machine_total: u64,
    /// This process (the server, and the worker too when it runs in-process).
    pub server: u64,
    /// The worker's own process, when it has one.
    pub worker: Option<u64>,
}

impl CpuTicks {
    pub fn read(worker_pid: Option<u32>) -> Option<Self> {
        let (machine_busy, machine_total) =
            machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let server = process_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let worker = worker_pid.and_then(|pid| {
            process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
        });
        Some(Self {
            machine_busy,
            machine_total,
            server,
            worker,
        })
    }
}

/// CPU per durable step over a phase, in microseconds, and how busy the machine was.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CpuPerStep {
    pub machine_busy_pct: f64,
    pub server_us: f64,
    pub worker_us: Option<f64>,
    /// Everything else that ran meanwhile: the database, mostly.
    pub rest_us: f64,
}

impl CpuPerStep {
    pub fn between(before: CpuTicks, after: CpuTicks, steps: u64) -> Self {
        let steps = steps.max(1) as f64;
        let busy = after.machine_busy.saturating_sub(before.machine_busy);
        let total = after.machine_total.saturating_sub(before.machine_total);
        let server = after.server.saturating_sub(before.server);
        let worker = match (before.worker, after.worker) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let rest = busy.saturating_sub(server + worker.unwrap_or(0));
        Self {
            machine_busy_pct: 100.0 * busy as f64 / total.max(1) as f64,
            server_us: server as f64 * MICROS_PER_TICK / steps,
            worker_us: worker.map(|w| w as f64 * MICROS_PER_TICK / steps),
            rest_us: rest as f64 * MICROS_PER_TICK / steps,
        }
    }
}

/// Statements and commits per durable step over a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripsPerStep {
    pub statements: f64,
    pub commits: f64,
}

impl TripsPerStep {
    pub fn between(before: RoundTrips, after: RoundTrips, steps: u64) -> Self {
        let sent = after.since(before);
        let steps = steps.max(1) as f64;
        Self {
            statements: sent.statements as f64 / steps,
            commits: sent.commits as f64 / steps,
        }
    }
}

/// `/proc/stat`'s first line: `cpu user nice system idle iowait irq softirq steal …`.
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if ticks.len() < 8 {
        return None;
    }
    let total: u64 = ticks.iter().sum();
    let idle = ticks[3] + ticks[4];
    Some((total - idle, total))
}

/// `/proc/<pid>/stat`: utime and stime are fields 14 and 15; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some((160, 1000)));
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn process_ticks_survive_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 900 0 0 0 37 12 0 0 20 0 9 0";
        assert_eq!(process_ticks(stat), Some(49));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn cpu_per_step_splits_the_machine_between_server_worker_and_rest() {
        let before = CpuTicks {
            machine_busy: 1000,
            machine_total: 4000,
            server: 100,
            worker: Some(50),
        };
        let after = CpuTicks {
            machine_busy: 1300,
            machine_total: 4400,
            server: 200,
            worker: Some(100),
        };
        let per = CpuPerStep::between(before, after, 1000);
        assert!((per.machine_busy_pct - 75.0).abs() < 1e-9);
        assert!((per.server_us - 1000.0).abs() < 1e-9);
        assert_eq!(per.worker_us, Some(500.0));
        assert!((per.rest_us - 1500.0).abs() < 1e-9);
    }
}
