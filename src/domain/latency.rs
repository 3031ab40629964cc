//! Latency summaries: p50 and p99 of a set of durations (nearest-rank), for the overview's
//! schedule-to-start figure.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub samples: usize,
}

/// The nearest-rank `q`-quantile (0 < q ≤ 1) of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// p50 and p99 of the samples (negative ones — clock skew between nodes — count as 0).
pub fn summarize(samples: impl IntoIterator<Item = f64>) -> LatencySummary {
    let mut sorted: Vec<f64> = samples
        .into_iter()
        .filter(|s| s.is_finite())
        .map(|s| s.max(0.0))
        .collect();
    sorted.sort_by(f64::total_cmp);
    LatencySummary {
        p50: quantile(&sorted, 0.5),
        p99: quantile(&sorted, 0.99),
        samples: sorted.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = summarize((1..=100).map(f64::from));
        assert_eq!((s.p50, s.p99, s.samples), (Some(50.0), Some(99.0), 100));
        let one = summarize([7.0]);
        assert_eq!((one.p50, one.p99), (Some(7.0), Some(7.0)));
    }

    #[test]
    fn empty_has_no_percentiles_and_skew_counts_as_zero() {
        assert_eq!(summarize([]).p50, None);
        assert_eq!(summarize([-5.0, f64::NAN]).p99, Some(0.0));
    }
}
