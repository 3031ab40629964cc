//! Cron schedules as pure decisions: parsing a trigger's expression (five fields, or six with
//! seconds; an optional `TZ=<zone>` / `CRON_TZ=<zone>` prefix, UTC otherwise), the next tick,
//! and what a node does with a schedule row that came due (the catch-up rule).

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::domain::time::Ts;

/// A parsed cron trigger.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl CronSchedule {
    /// Parses `"*/5 * * * *"`, `"*/2 * * * * *"` (seconds first) or `"TZ=Europe/Berlin 0 9 * * *"`;
    /// the error names what is wrong.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let expression = expression.trim();
        let (zone, pattern) = match expression
            .strip_prefix("CRON_TZ=")
            .or_else(|| expression.strip_prefix("TZ="))
        {
            Some(rest) => {
                let (zone, pattern) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("'{expression}' has a time zone but no schedule"))?;
                let zone: chrono_tz::Tz = zone
                    .parse()
                    .map_err(|_| format!("unknown time zone '{zone}'"))?;
                (zone, pattern.trim())
            }
            None => (chrono_tz::UTC, expression),
        };
        let fields = pattern.split_whitespace().count();
        if !(5..=6).contains(&fields) && !pattern.starts_with('@') {
            return Err(format!(
                "'{pattern}' has {fields} fields; a cron schedule has 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| format!("'{pattern}' is not a cron schedule: {e}"))?;
        // A pattern that matches nothing (30 February) is refused now rather than never firing.
        let schedule = Self { cron, zone };
        schedule
            .next_after(Ts::now())
            .ok_or_else(|| format!("'{pattern}' never fires"))?;
        Ok(schedule)
    }

    /// The first tick strictly after `at`.
    pub fn next_after(&self, at: Ts) -> Option<Ts> {
        let local = at.0.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| Ts(t.with_timezone(&Utc)))
    }

    /// The last tick at or before `at`.
    pub fn latest_at_or_before(&self, at: Ts) -> Option<Ts> {
        let local = at.0.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| Ts(t.with_timezone(&Utc)))
    }
}

/// One cron trigger's place in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSlot {
    pub trigger_index: i32,
    pub expression: String,
    pub next_at: Ts,
}

/// The schedule a definition's cron triggers want: an unchanged trigger keeps its next tick (a
/// re-registration neither skips nor repeats one), a new or changed one starts at its first
/// tick after `now`. Expressions that do not parse (stored before validation) are left out.
pub fn plan_slots(
    triggers: &[(i32, &str)],
    existing: &[ScheduleSlot],
    now: Ts,
) -> Vec<ScheduleSlot> {
    triggers
        .iter()
        .filter_map(|(index, expression)| {
            let kept = existing
                .iter()
                .find(|s| s.trigger_index == *index && s.expression == *expression);
            let next_at = match kept {
                Some(slot) => slot.next_at,
                None => CronSchedule::parse(expression).ok()?.next_after(now)?,
            };
            Some(ScheduleSlot {
                trigger_index: *index,
                expression: (*expression).to_owned(),
                next_at,
            })
        })
        .collect()
}

/// What a node does with a schedule row whose `next_at` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickDecision {
    /// The tick to start a run for (`None`: the function is not active, the tick is skipped).
    pub fire: Option<Ts>,
    /// Ticks that passed without a run (downtime or a pause) besides the one fired.
    pub missed: u32,
    /// The row's next tick.
    pub next_at: Ts,
}

/// The catch-up rule: however many ticks passed since `next_at` (a node was down, nobody was
/// serving), at most one run starts — for the latest tick that passed — and the schedule moves
/// to the first tick after `now`. A paused function's ticks pass without runs.
pub fn decide_tick(schedule: &CronSchedule, next_at: Ts, now: Ts, active: bool) -> TickDecision {
    let latest = schedule
        .latest_at_or_before(now)
        .filter(|t| *t >= next_at)
        .unwrap_or(next_at);
    let missed = count_ticks(schedule, next_at, latest);
    let next = schedule
        .next_after(now)
        .unwrap_or_else(|| now.plus(std::time::Duration::from_secs(86_400 * 365)));
    TickDecision {
        fire: active.then_some(latest),
        missed: if active { missed } else { missed + 1 },
        next_at: next,
    }
}

/// Ticks in `[from, until)`, counted up to a bound (a long downtime of a per-second schedule).
fn count_ticks(schedule: &CronSchedule, from: Ts, until: Ts) -> u32 {
    const BOUND: u32 = 10_000;
    let mut n = 0;
    let mut at = from;
    while at < until && n < BOUND {
        n += 1;
        match schedule.next_after(at) {
            Some(t) => at = t,
            None => break,
        }
    }
    n
}

/// An instant as the idempotency key of a tick: its Unix milliseconds.
pub fn tick_key(function_id: &str, trigger_index: i32, tick: Ts) -> String {
    format!("cron:{function_id}:{trigger_index}:{}", tick.millis())
}

/// `2026-12-03T10:00:00Z`, how a tick is shown in the run's event.
pub fn tick_text(tick: Ts) -> String {
    let t: DateTime<Utc> = tick.0;
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Ts {
        Ts(DateTime::parse_from_rfc3339(s)
            .expect("valid instant")
            .with_timezone(&Utc))
    }

    #[test]
    fn five_and_six_field_schedules_and_zones() {
        let every5 = CronSchedule::parse("*/5 * * * *").expect("parses");
        assert_eq!(
            every5.next_after(at("2026-12-03T10:02:30Z")),
            Some(at("2026-12-03T10:05:00Z"))
        );
        let every2s = CronSchedule::parse("*/2 * * * * *").expect("parses");
        assert_eq!(
            every2s.next_after(at("2026-12-03T10:00:01.500Z")),
            Some(at("2026-12-03T10:00:02Z"))
        );
        let hourly = CronSchedule::parse("@hourly").expect("parses");
        assert_eq!(
            hourly.next_after(at("2026-12-03T10:02:30Z")),
            Some(at("2026-12-03T11:00:00Z"))
        );
        let berlin = CronSchedule::parse("TZ=Europe/Berlin 0 9 * * *").expect("parses");
        // 09:00 in Berlin in December is 08:00 UTC.
        assert_eq!(
            berlin.next_after(at("2026-12-03T07:00:00Z")),
            Some(at("2026-12-03T08:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        for (bad, says) in [
            ("* * *", "fields"),
            ("61 * * * *", "not a cron schedule"),
            ("TZ=Mars/Olympus 0 9 * * *", "time zone"),
            ("TZ=UTC", "no schedule"),
        ] {
            let err = CronSchedule::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_due_tick_fires_once_and_moves_on() {
        let s = CronSchedule::parse("*/5 * * * *").expect("parses");
        let d = decide_tick(
            &s,
            at("2026-12-03T10:05:00Z"),
            at("2026-12-03T10:05:00.020Z"),
            true,
        );
        assert_eq!(d.fire, Some(at("2026-12-03T10:05:00Z")));
        assert_eq!(d.missed, 0);
        assert_eq!(d.next_at, at("2026-12-03T10:10:00Z"));
    }

    #[test]
    fn after_downtime_only_the_latest_missed_tick_runs() {
        let s = CronSchedule::parse("*/5 * * * *").expect("parses");
        // Down from 10:05 to 10:27: ticks 10:05 … 10:25 passed.
        let d = decide_tick(
            &s,
            at("2026-12-03T10:05:00Z"),
            at("2026-12-03T10:27:00Z"),
            true,
        );
        assert_eq!(d.fire, Some(at("2026-12-03T10:25:00Z")));
        assert_eq!(d.missed, 4);
        assert_eq!(d.next_at, at("2026-12-03T10:30:00Z"));
    }

    #[test]
    fn a_paused_function_skips_its_ticks() {
        let s = CronSchedule::parse("*/5 * * * *").expect("parses");
        let d = decide_tick(
            &s,
            at("2026-12-03T10:05:00Z"),
            at("2026-12-03T10:06:00Z"),
            false,
        );
        assert_eq!(d.fire, None);
        assert_eq!(d.missed, 1);
        assert_eq!(d.next_at, at("2026-12-03T10:10:00Z"));
    }

    #[test]
    fn re_registering_keeps_an_unchanged_triggers_next_tick() {
        let now = at("2026-12-03T10:02:00Z");
        let existing = vec![ScheduleSlot {
            trigger_index: 0,
            expression: "*/5 * * * *".into(),
            next_at: at("2026-12-03T10:05:00Z"),
        }];
        let same = plan_slots(&[(0, "*/5 * * * *")], &existing, now);
        assert_eq!(same, existing);
        let changed = plan_slots(&[(0, "*/10 * * * *")], &existing, now);
        assert_eq!(changed[0].next_at, at("2026-12-03T10:10:00Z"));
        assert!(plan_slots(&[], &existing, now).is_empty());
    }

    #[test]
    fn tick_keys_differ_per_tick_and_trigger() {
        let a = tick_key("f", 0, at("2026-12-03T10:05:00Z"));
        assert_ne!(a, tick_key("f", 0, at("2026-12-03T10:10:00Z")));
        assert_ne!(a, tick_key("f", 1, at("2026-12-03T10:05:00Z")));
    }
}
