//! Throttle, the start-rate limit: when a new run may start, given the start instants its
//! window remembers. Runs over the limit are queued with a later start, never dropped.

use crate::domain::function::ThrottleDef;
use crate::domain::time::Ts;

/// The start instants (Unix ms, ascending) a throttle key remembers: at most `limit` of them,
/// the last ones given out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThrottleWindow {
    pub starts: Vec<i64>,
}

/// A new run's admission: when it may start, and the window to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub start_at_ms: i64,
    pub window: ThrottleWindow,
}

impl Admission {
    /// The start as an instant when it is later than `now` (otherwise the run starts at once).
    pub fn delayed_start(&self, now: Ts) -> Option<Ts> {
        (self.start_at_ms > now.millis()).then(|| {
            let delay = u64::try_from(self.start_at_ms - now.millis()).unwrap_or(0);
            now.plus(std::time::Duration::from_millis(delay))
        })
    }
}

/// A sliding window: the n-th start is at least `period` after the (n − limit)-th, so no
/// window of `period` ever holds more than `limit` starts. Runs are given out in order, so
/// starts never decrease.
pub fn admit(window: &ThrottleWindow, now_ms: i64, def: &ThrottleDef) -> Admission {
    let limit = usize::try_from(def.limit.max(1)).unwrap_or(1);
    let mut starts = window.starts.clone();
    starts.sort_unstable();
    let earliest = if starts.len() >= limit {
        starts[starts.len() - limit] + i64::from(def.period_ms.max(0))
    } else {
        i64::MIN
    };
    let latest_given = starts.last().copied().unwrap_or(i64::MIN);
    let start_at_ms = now_ms.max(earliest).max(latest_given);
    starts.push(start_at_ms);
    if starts.len() > limit {
        starts.drain(..starts.len() - limit);
    }
    Admission {
        start_at_ms,
        window: ThrottleWindow { starts },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(limit: i32, period_ms: i32) -> ThrottleDef {
        ThrottleDef {
            limit,
            period_ms,
            key: String::new(),
        }
    }

    #[test]
    fn ten_runs_at_two_per_second_start_in_pairs_a_second_apart() {
        let mut window = ThrottleWindow::default();
        let mut starts = Vec::new();
        for _ in 0..10 {
            let a = admit(&window, 1_000, &def(2, 1_000));
            starts.push(a.start_at_ms);
            window = a.window;
        }
        assert_eq!(
            starts,
            [
                1_000, 1_000, 2_000, 2_000, 3_000, 3_000, 4_000, 4_000, 5_000, 5_000
            ]
        );
    }

    #[test]
    fn no_period_ever_holds_more_than_the_limit() {
        let mut window = ThrottleWindow::default();
        let mut starts = Vec::new();
        // Arrivals at irregular instants, some bunched.
        for now in [
            0, 10, 20, 900, 950, 1_500, 1_510, 1_520, 4_000, 4_001, 4_002, 4_003,
        ] {
            let a = admit(&window, now, &def(3, 1_000));
            assert!(a.start_at_ms >= now, "never before it arrived");
            starts.push(a.start_at_ms);
            window = a.window;
        }
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
        for (i, s) in starts.iter().enumerate() {
            let within = starts[i..].iter().filter(|t| **t < s + 1_000).count();
            assert!(within <= 3, "{starts:?}");
        }
        assert!(window.starts.len() <= 3);
    }

    #[test]
    fn a_quiet_key_starts_at_once() {
        let a = admit(
            &ThrottleWindow {
                starts: vec![0, 100],
            },
            10_000,
            &def(2, 1_000),
        );
        assert_eq!(a.start_at_ms, 10_000);
        assert_eq!(a.delayed_start(Ts::now()), None);
    }
}
