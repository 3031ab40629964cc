//! Debounce: events in quick succession collapse into one run, started with the last of them
//! after `period` of quiet (per key value), never later than `max_wait` after the first.

use crate::domain::function::DebounceDef;
use crate::domain::time::Ts;
use crate::ids::EventId;

/// A key's pending run: armed by its first event, carrying the latest one.
#[derive(Debug, Clone, PartialEq)]
pub struct DebounceState {
    pub armed_at: Ts,
    pub fires_at: Ts,
    pub event_id: EventId,
    /// Events collapsed into it so far.
    pub events: i64,
}

/// The state after an event arrives at `now`: the quiet period starts again, bounded by the
/// first event's `max_wait`.
pub fn on_event(
    existing: Option<&DebounceState>,
    now: Ts,
    event_id: &EventId,
    def: &DebounceDef,
) -> DebounceState {
    let armed_at = existing.map_or(now, |s| s.armed_at);
    let quiet = now.plus(millis(i64::from(def.period_ms)));
    let fires_at = if def.max_wait_ms > 0 {
        quiet.min(armed_at.plus(millis(def.max_wait_ms)))
    } else {
        quiet
    };
    DebounceState {
        armed_at,
        // Never earlier than a time already promised (a max_wait shorter than the period).
        fires_at: fires_at.max(now),
        event_id: event_id.clone(),
        events: existing.map_or(1, |s| s.events + 1),
    }
}

fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The key value of an event: the definition's path into its data, as text; an empty path or
/// one the data lacks is the global key `""`.
pub fn key_of(def: &DebounceDef, data: &serde_json::Value) -> String {
    path_value(&def.key, data)
}

/// A data path's value as text (`"customer.id"`; a leading `data.` or `event.data.` is
/// accepted), `""` when the path is empty or absent.
pub fn path_value(path: &str, data: &serde_json::Value) -> String {
    let path = path.trim();
    let path = path
        .strip_prefix("event.data.")
        .or_else(|| path.strip_prefix("data."))
        .unwrap_or(path);
    if path.is_empty() {
        return String::new();
    }
    match path.split('.').try_fold(data, |v, k| v.get(k)) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(period_ms: i32, max_wait_ms: i64) -> DebounceDef {
        DebounceDef {
            period_ms,
            key: "user".into(),
            max_wait_ms,
        }
    }

    fn at(ms: i64) -> Ts {
        Ts(chrono::DateTime::from_timestamp_millis(ms).expect("in range"))
    }

    #[test]
    fn each_event_restarts_the_quiet_period_and_carries_the_latest() {
        let e1 = EventId::generate();
        let e2 = EventId::generate();
        let first = on_event(None, at(0), &e1, &def(1_000, 0));
        assert_eq!(first.fires_at, at(1_000));
        let second = on_event(Some(&first), at(600), &e2, &def(1_000, 0));
        assert_eq!(second.fires_at, at(1_600));
        assert_eq!(second.armed_at, at(0));
        assert_eq!(second.event_id, e2);
        assert_eq!(second.events, 2);
    }

    #[test]
    fn max_wait_bounds_the_delay_from_the_first_event() {
        let mut state = on_event(None, at(0), &EventId::generate(), &def(1_000, 2_500));
        for t in [500, 1_000, 1_500, 2_000, 2_400] {
            state = on_event(
                Some(&state),
                at(t),
                &EventId::generate(),
                &def(1_000, 2_500),
            );
        }
        assert_eq!(state.fires_at, at(2_500));
    }

    #[test]
    fn keys_are_data_paths() {
        let data = serde_json::json!({"user": "u1", "order": {"id": 7}});
        assert_eq!(key_of(&def(1_000, 0), &data), "u1");
        assert_eq!(path_value("order.id", &data), "7");
        assert_eq!(path_value("data.order.id", &data), "7");
        assert_eq!(path_value("event.data.user", &data), "u1");
        assert_eq!(path_value("missing", &data), "");
        assert_eq!(path_value("", &data), "");
    }
}
