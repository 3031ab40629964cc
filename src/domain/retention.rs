//! History retention: given each environment's setting and (on Postgres) the history's monthly
//! partitions, what a retention pass removes. Nothing is ever changed; an environment's expired
//! range is removed whole — by dropping a partition every environment has expired, else by
//! deleting that environment's entries of wholly expired partitions — and by nothing else.

use chrono::{Datelike, TimeZone, Utc};

use super::time::Ts;

/// One environment's setting: keep entries `days` days (`None`: keep everything, the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRetention {
    pub env_id: String,
    pub days: Option<u32>,
}

/// One partition of the history (Postgres): the range of `recorded_at` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPartition {
    pub name: String,
    /// `None`: from the beginning (the partition an earlier release's table became).
    pub from: Option<Ts>,
    /// `None`: the default partition (whatever no monthly one covers); never dropped.
    pub to: Option<Ts>,
}

/// What a pass decides on.
#[derive(Debug, Clone)]
pub struct RetentionFacts {
    pub now: Ts,
    /// Every live environment.
    pub envs: Vec<EnvRetention>,
    /// The history's partitions; `None` where the history is one table (SQLite).
    pub partitions: Option<Vec<HistoryPartition>>,
}

/// What one environment loses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCutoff {
    pub env_id: String,
    /// Finished runs (ended before), their steps, and events (received before) that no
    /// remaining run refers to.
    pub before: Ts,
    /// History entries recorded before this (on Postgres the end of the last partition wholly
    /// before `before`: entries leave a month at a time; on SQLite `before` itself). `None`:
    /// no history entry is old enough yet.
    pub history_before: Option<Ts>,
}

/// A monthly partition to create ahead of its month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartition {
    pub name: String,
    pub from: Ts,
    pub to: Ts,
}

/// What a pass does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub cutoffs: Vec<EnvCutoff>,
    /// Partitions every environment has expired: dropped whole.
    pub drop_partitions: Vec<String>,
    /// This month's and the next two months' partitions, where missing.
    pub create_partitions: Vec<NewPartition>,
}

/// Months of partitions kept ready ahead of time (this one and the next two).
pub const MONTHS_AHEAD: u32 = 3;

/// The first instant of the month `offset` months after `at`'s.
fn month_start(at: Ts, offset: u32) -> Ts {
    let months = at.0.year() * 12 + at.0.month0() as i32 + offset as i32;
    let (year, month0) = (months.div_euclid(12), months.rem_euclid(12) as u32);
    Ts(Utc
        .with_ymd_and_hms(year, month0 + 1, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists"))
}

/// The name of the partition holding the month starting at `from`.
pub fn partition_name(from: Ts) -> String {
    format!("history_y{:04}m{:02}", from.0.year(), from.0.month())
}

/// The longest retention a setting may ask for (a hundred years; `None` keeps everything).
pub const MAX_DAYS: u32 = 36_500;

/// A setting as a request gives it: a whole number of days, or `null` to keep everything.
pub fn parse_days(value: &serde_json::Value) -> Result<Option<u32>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        v => v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .map(Some)
            .ok_or_else(|| {
                format!("retention_days must be a whole number of days from 1 to {MAX_DAYS}, or null to keep everything; got {v}")
            }),
    }
}

/// Decides a retention pass.
pub fn plan(facts: &RetentionFacts) -> RetentionPlan {
    let day = std::time::Duration::from_secs(86_400);
    let mut plan = RetentionPlan::default();
    // A partition can go whole only when every environment has a retention and the longest
    // has passed its end (an environment that keeps everything keeps every partition).
    let floor = facts
        .envs
        .iter()
        .map(|e| e.days)
        .collect::<Option<Vec<u32>>>()
        .and_then(|days| days.into_iter().max())
        .map(|longest| facts.now.minus(day * longest));
    if let Some(partitions) = &facts.partitions {
        if let Some(floor) = floor {
            plan.drop_partitions = partitions
                .iter()
                .filter(|p| p.to.is_some_and(|to| to <= floor))
                .map(|p| p.name.clone())
                .collect();
        }
        for offset in 0..MONTHS_AHEAD {
            let from = month_start(facts.now, offset);
            let to = month_start(facts.now, offset + 1);
            let covered = partitions.iter().any(|p| {
                p.to.is_some() && p.from.is_none_or(|f| f <= from) && p.to.is_some_and(|t| t >= to)
            });
            if !covered {
                plan.create_partitions.push(NewPartition {
                    name: partition_name(from),
                    from,
                    to,
                });
            }
        }
    }
    for env in &facts.envs {
        let Some(days) = env.days else { continue };
        let before = facts.now.minus(day * days);
        let history_before = match &facts.partitions {
            None => Some(before),
            Some(partitions) => partitions
                .iter()
                .filter_map(|p| p.to)
                .filter(|to| *to <= before)
                .max(),
        };
        plan.cutoffs.push(EnvCutoff {
            env_id: env.env_id.clone(),
            before,
            history_before,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Ts {
        Ts(chrono::DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc))
    }

    fn month(from: &str, to: &str) -> HistoryPartition {
        let from = ts(from);
        HistoryPartition {
            name: partition_name(from),
            from: Some(from),
            to: Some(ts(to)),
        }
    }

    fn envs(days: &[Option<u32>]) -> Vec<EnvRetention> {
        days.iter()
            .enumerate()
            .map(|(i, d)| EnvRetention {
                env_id: format!("env{i}"),
                days: *d,
            })
            .collect()
    }

    fn partitions() -> Vec<HistoryPartition> {
        vec![
            HistoryPartition {
                name: "history_before_partitioning".into(),
                from: None,
                to: Some(ts("2026-09-01T00:00:00Z")),
            },
            month("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"),
            month("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"),
            month("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            month("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            HistoryPartition {
                name: "history_default".into(),
                from: None,
                to: None,
            },
        ]
    }

    #[test]
    fn keeping_everything_is_the_default_and_removes_nothing() {
        let facts = RetentionFacts {
            now: ts("2026-12-15T12:00:00Z"),
            envs: envs(&[None, None]),
            partitions: Some(partitions()),
        };
        let plan = plan(&facts);
        assert!(plan.cutoffs.is_empty() && plan.drop_partitions.is_empty());
        // January and February are made ahead; December exists.
        assert_eq!(
            plan.create_partitions
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["history_y2027m01", "history_y2027m02"]
        );
        assert_eq!(plan.create_partitions[1].from, ts("2027-02-01T00:00:00Z"));
        assert_eq!(plan.create_partitions[1].to, ts("2027-03-01T00:00:00Z"));
    }

    #[test]
    fn whole_months_every_environment_expired_are_dropped() {
        let facts = RetentionFacts {
            now: ts("2026-12-15T12:00:00Z"),
            envs: envs(&[Some(30), Some(60)]),
            partitions: Some(partitions()),
        };
        let plan = plan(&facts);
        // The longest retention (60 days) reaches back to 2026-10-16: September and before go.
        assert_eq!(
            plan.drop_partitions,
            ["history_before_partitioning", "history_y2026m09"]
        );
        // The 30-day environment also loses October's entries (deleted, the partition stays for
        // the other one); November is not wholly expired for it.
        assert_eq!(
            plan.cutoffs[0],
            EnvCutoff {
                env_id: "env0".into(),
                before: ts("2026-11-15T12:00:00Z"),
                history_before: Some(ts("2026-11-01T00:00:00Z")),
            }
        );
        assert_eq!(
            plan.cutoffs[1].history_before,
            Some(ts("2026-10-01T00:00:00Z"))
        );
    }

    #[test]
    fn an_environment_that_keeps_everything_keeps_every_partition() {
        let facts = RetentionFacts {
            now: ts("2026-12-15T12:00:00Z"),
            envs: envs(&[Some(7), None]),
            partitions: Some(partitions()),
        };
        let plan = plan(&facts);
        assert!(plan.drop_partitions.is_empty());
        assert_eq!(plan.cutoffs.len(), 1);
        assert_eq!(
            plan.cutoffs[0].history_before,
            Some(ts("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn sqlite_removes_at_the_exact_cutoff() {
        let facts = RetentionFacts {
            now: ts("2026-12-15T12:00:00Z"),
            envs: envs(&[Some(1)]),
            partitions: None,
        };
        let plan = plan(&facts);
        assert!(plan.create_partitions.is_empty() && plan.drop_partitions.is_empty());
        assert_eq!(
            plan.cutoffs[0].history_before,
            Some(ts("2026-12-14T12:00:00Z"))
        );
    }

    #[test]
    fn settings_are_whole_days_or_null() {
        assert_eq!(parse_days(&serde_json::json!(30)), Ok(Some(30)));
        assert_eq!(parse_days(&serde_json::Value::Null), Ok(None));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-3),
            serde_json::json!(1.5),
            serde_json::json!("30"),
            serde_json::json!(36_501),
        ] {
            assert!(
                parse_days(&bad)
                    .expect_err("refused")
                    .contains("retention_days"),
                "{bad}"
            );
        }
    }

    #[test]
    fn months_roll_over_the_year() {
        assert_eq!(
            month_start(ts("2026-11-30T23:59:59Z"), 2),
            ts("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            partition_name(ts("2027-01-01T00:00:00Z")),
            "history_y2027m01"
        );
    }
}
