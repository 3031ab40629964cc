//! `Ts`: a UTC instant with microsecond precision (what Postgres keeps), moved by capped spans.
//! How it is stored (`timestamptz` on Postgres, fixed-width RFC 3339 text on SQLite) is the
//! store's business (`store::time`).

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub DateTime<Utc>);

impl Ts {
    pub fn now() -> Self {
        // Microsecond precision: what Postgres keeps, so values read back compare equal.
        let now = Utc::now();
        let micros = now.timestamp_micros();
        Self(DateTime::from_timestamp_micros(micros).unwrap_or(now))
    }

    /// `2026-11-22T03:12:01.123456Z`: fixed width, sorts as text.
    pub fn to_rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// `self + d` (saturating far in the future for absurd durations).
    /// `self + d`, with `d` capped at [`MAX_SPAN`]: a client-supplied delay (a retry-after, a
    /// sleep, a timeout) can never overflow the calendar or sort wrongly as stored text.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(self.0 + span(d))
    }

    /// `self - d`, with `d` capped at [`MAX_SPAN`].
    pub fn minus(self, d: std::time::Duration) -> Self {
        Self(self.0 - span(d))
    }
}

impl From<DateTime<Utc>> for Ts {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

/// The longest span an instant is moved by: 100 years.
pub const MAX_SPAN: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d.min(MAX_SPAN)).unwrap_or(chrono::Duration::days(36_500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_spans_are_capped_not_overflowed() {
        let now = Ts::now();
        let far = now.plus(std::time::Duration::from_millis(u64::MAX));
        assert_eq!(far, now.plus(MAX_SPAN));
        assert!(
            far.0.to_rfc3339().len() < 40,
            "a four-digit year: sorts as text"
        );
        assert_eq!(now.minus(std::time::Duration::MAX), now.minus(MAX_SPAN));
    }
}
