//! Push endpoints' circuit breakers in domain terms: states, the API key of a breaker, settings,
//! and the pure transition rules (the store applies them under a row lock).

use std::time::Duration;

use crate::domain::time::Ts;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// No requests until `open_until`; runs stay queued.
    Open,
    /// One probe request is in flight (until `open_until`); its outcome closes or reopens.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(Self::Closed),
            "open" => Some(Self::Open),
            "half_open" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// How many consecutive failures open a breaker and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

impl BreakerSettings {
    /// The server's settings with a function's `circuitBreaker` overrides (zero keeps the default).
    pub fn for_function(
        self,
        def: Option<&crate::domain::function::CircuitBreakerDef>,
    ) -> BreakerSettings {
        let Some(def) = def else { return self };
        BreakerSettings {
            failure_threshold: u32::try_from(def.failure_threshold)
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(self.failure_threshold),
            open_for: u64::try_from(def.open_duration_ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map_or(self.open_for, Duration::from_millis),
        }
    }
}

/// One breaker as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub state: BreakerState,
    pub consecutive_fails: i32,
    pub open_until: Option<Ts>,
    pub last_failure_at: Option<Ts>,
    pub last_error: Option<String>,
}

impl Breaker {
    pub fn closed() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_fails: 0,
            open_until: None,
            last_failure_at: None,
            last_error: None,
        }
    }
}

/// What a dispatcher may do with a breaker right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: send as many requests as capacity allows.
    Flow,
    /// This dispatcher took the half-open probe: send exactly one request.
    Probe,
    /// Open, or another probe is in flight: send nothing; look again at this instant.
    Blocked { until: Ts },
}

/// A transition worth a history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
    Reset,
}

/// Decides whether requests may go out; `Some` new state when the decision is a transition
/// (an open breaker whose window passed half-opens and hands this caller the probe, which it
/// holds until `now + probe_for`; a probe that lapsed is handed out again).
pub fn permit(b: &Breaker, now: Ts, probe_for: Duration) -> (Permit, Option<Breaker>) {
    match b.state {
        BreakerState::Closed => (Permit::Flow, None),
        BreakerState::Open | BreakerState::HalfOpen => {
            let until = b.open_until.unwrap_or(now);
            if until > now {
                return (Permit::Blocked { until }, None);
            }
            let next = Breaker {
                state: BreakerState::HalfOpen,
                open_until: Some(now.plus(probe_for)),
                ..b.clone()
            };
            (Permit::Probe, Some(next))
        }
    }
}

/// Applies one request's outcome. A success closes the breaker; a failure counts, and opens it
/// at the threshold (or at once when it was the half-open probe).
pub fn record(
    b: &Breaker,
    success: bool,
    error: Option<&str>,
    settings: BreakerSettings,
    now: Ts,
) -> (Breaker, Option<Transition>) {
    if success {
        let transition = (b.state != BreakerState::Closed).then_some(Transition::Closed);
        let next = Breaker {
            state: BreakerState::Closed,
            consecutive_fails: 0,
            open_until: None,
            ..b.clone()
        };
        return (next, transition);
    }
    let fails = b.consecutive_fails.saturating_add(1);
    let threshold = i32::try_from(settings.failure_threshold.max(1)).unwrap_or(i32::MAX);
    let open = match b.state {
        BreakerState::Closed => fails >= threshold,
        // A failed probe reopens; a late failure of a request sent before it opened does not
        // extend the window.
        BreakerState::HalfOpen => true,
        BreakerState::Open => false,
    };
    let next = Breaker {
        state: if open { BreakerState::Open } else { b.state },
        consecutive_fails: fails,
        open_until: if open {
            Some(now.plus(settings.open_for))
        } else {
            b.open_until
        },
        last_failure_at: Some(now),
        last_error: error.map(|e| e.chars().take(500).collect()),
    };
    (next, open.then_some(Transition::Opened))
}

/// The key a breaker is named by in the API: `<function id>|<endpoint URL>` (function ids
/// cannot contain `|`).
pub fn breaker_key(function_id: &str, endpoint: &str) -> String {
    format!("{function_id}|{endpoint}")
}

/// Splits a key made by [`breaker_key`].
pub fn parse_breaker_key(key: &str) -> Result<(String, String), String> {
    match key.split_once('|') {
        Some((f, e)) if !f.is_empty() && !e.is_empty() => Ok((f.to_owned(), e.to_owned())),
        _ => Err(format!(
            "circuit breaker key '{key}' must be '<function id>|<endpoint URL>'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(60),
        }
    }

    #[test]
    fn opens_at_the_threshold_then_probes_once_and_closes() {
        let now = Ts::now();
        let mut b = Breaker::closed();
        for i in 1..=3 {
            let (next, t) = record(&b, false, Some("boom"), settings(), now);
            assert_eq!(t.is_some(), i == 3, "opens on failure {i} only");
            b = next;
        }
        assert_eq!(b.state, BreakerState::Open);
        assert!(matches!(
            permit(&b, now, Duration::from_secs(5)).0,
            Permit::Blocked { .. }
        ));
        let later = now.plus(Duration::from_secs(61));
        let (p, next) = permit(&b, later, Duration::from_secs(5));
        assert_eq!(p, Permit::Probe);
        let half = next.expect("half-opens");
        assert_eq!(half.state, BreakerState::HalfOpen);
        assert!(matches!(
            permit(&half, later, Duration::from_secs(5)).0,
            Permit::Blocked { .. }
        ));
        let (closed, t) = record(&half, true, None, settings(), later);
        assert_eq!(t, Some(Transition::Closed));
        assert_eq!(closed.state, BreakerState::Closed);
        assert_eq!(closed.consecutive_fails, 0);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let now = Ts::now();
        let half = Breaker {
            state: BreakerState::HalfOpen,
            consecutive_fails: 5,
            open_until: Some(now.plus(Duration::from_secs(5))),
            last_failure_at: None,
            last_error: None,
        };
        let (b, t) = record(&half, false, None, settings(), now);
        assert_eq!((b.state, t), (BreakerState::Open, Some(Transition::Opened)));
    }

    #[test]
    fn keys_round_trip_and_overrides_apply() {
        let key = breaker_key("f.1", "http://h:1/x?a=b|c");
        assert_eq!(
            parse_breaker_key(&key),
            Ok(("f.1".into(), "http://h:1/x?a=b|c".into()))
        );
        assert!(parse_breaker_key("nokey").is_err());
        let def = crate::domain::function::CircuitBreakerDef {
            failure_threshold: 2,
            open_duration_ms: 0,
            max_open_duration_ms: 0,
        };
        let s = BreakerSettings::default().for_function(Some(&def));
        assert_eq!(s.failure_threshold, 2);
        assert_eq!(s.open_for, Duration::from_secs(60));
    }
}
