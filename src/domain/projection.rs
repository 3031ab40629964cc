//! Projections: what a definition may say, which partition an event falls in, who holds the
//! runner lease and whether a presented lease still counts, when a failing projection stops, and
//! whether a reader has caught up. The store reads the facts and applies these decisions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::time::Ts;

/// The partition of events that have no partition value (and of projections without a key).
/// The SDK loads it as `""` and saves it as `"__global__"`: both name this one key.
pub const GLOBAL_PARTITION: &str = "__global__";

/// The partition key that takes an entity event's stream id as its partition.
pub const ENTITY_PARTITION_KEY: &str = "$entity_id";

/// Streams opened again at an unchanged cursor, after events past it were delivered, before the
/// projection is put in error: the SDK runner's default `max_retries` (the runner does not send
/// its own value).
pub const MAX_REDELIVERIES: i32 = 3;

/// How many event names one projection may follow.
pub const MAX_EVENTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionKind {
    /// The runner folds `(state, event) → state`; the server stores the state per partition.
    Managed,
    /// The runner's handler has side effects; the server keeps only the cursor.
    External,
    /// The server applies SQL statements to a table of its own.
    Sql,
}

impl ProjectionKind {
    /// The `mode` a runner registers with; empty means managed, as in the SDK.
    pub fn from_mode(mode: &str) -> Result<Self, String> {
        match mode.trim() {
            "" | "managed" => Ok(Self::Managed),
            "external" => Ok(Self::External),
            other => Err(format!(
                "mode must be 'managed' or 'external' (got '{other}')"
            )),
        }
    }

    pub fn from_stored(kind: &str) -> Self {
        match kind {
            "external" => Self::External,
            "sql" => Self::Sql,
            _ => Self::Managed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::External => "external",
            Self::Sql => "sql",
        }
    }

    /// The wire `mode`: SQL projections are run by the server and report `managed`'s sibling.
    pub fn mode(self) -> &'static str {
        self.as_str()
    }

    /// Whether a runner (not the server) applies the events, under a lease.
    pub fn runner_applied(self) -> bool {
        !matches!(self, Self::Sql)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionStatus {
    Active,
    Paused,
    /// The next event keeps failing; nothing is delivered until a resume.
    Error,
}

impl ProjectionStatus {
    pub fn from_stored(status: &str) -> Self {
        match status {
            "paused" => Self::Paused,
            "error" => Self::Error,
            _ => Self::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Error => "error",
        }
    }

    /// Whether events are delivered (or applied) in this status.
    pub fn delivers(self) -> bool {
        matches!(self, Self::Active)
    }
}

/// A projection name: 1–200 characters of letters, digits, `_ - . :`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a projection needs a name".into());
    }
    if name.chars().count() > 200 {
        return Err("a projection name is at most 200 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "projection name '{name}' contains '{c}': use letters, digits, '_', '-', '.' and ':'"
        ));
    }
    Ok(())
}

/// The event names a projection follows: at least one, none empty, without repeats (kept in
/// the order given).
pub fn check_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err("a projection must follow at least one event name".into());
    }
    if events.len() > MAX_EVENTS {
        return Err(format!(
            "a projection follows at most {MAX_EVENTS} event names (got {})",
            events.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        let e = e.trim();
        if e.is_empty() {
            return Err("an event name of the projection is empty".into());
        }
        if !out.iter().any(|o| o == e) {
            out.push(e.to_owned());
        }
    }
    Ok(out)
}

/// The stored key of a partition the SDK names: `""` is the global partition.
pub fn partition_key(partition: &str) -> &str {
    if partition.is_empty() {
        GLOBAL_PARTITION
    } else {
        partition
    }
}

/// The partition an event falls in under a projection's `partition_key`: empty → global;
/// `$entity_id` → the event's stream; otherwise a dotted path into the event's data whose value
/// (a string, or a number or boolean as text) is the partition. An event without that value is
/// in the global partition.
pub fn partition_of(key: &str, data: &Value, entity_id: Option<&str>) -> String {
    let key = key.trim();
    if key.is_empty() {
        return GLOBAL_PARTITION.to_owned();
    }
    if key == ENTITY_PARTITION_KEY {
        return entity_id
            .filter(|e| !e.is_empty())
            .unwrap_or(GLOBAL_PARTITION)
            .to_owned();
    }
    let path = key.strip_prefix("data.").unwrap_or(key);
    let mut at = data;
    for part in path.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return GLOBAL_PARTITION.to_owned(),
        }
    }
    match at {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => GLOBAL_PARTITION.to_owned(),
    }
}

/// A projection's definition as a runner or a `CreateSQLProjection` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub kind: ProjectionKind,
    pub events: Vec<String>,
    pub partition_key: String,
    #[serde(default)]
    pub description: String,
    /// SQL projections: the table's DDL as given, and event name → statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_handlers: Option<std::collections::BTreeMap<String, String>>,
}

/// What registering a definition does to the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// No projection of that name: revision 1.
    Created,
    /// Same definition: nothing changes (a runner registers on every start).
    Unchanged,
    /// The definition changed: the next revision, the cursor kept.
    Updated { revision: i64 },
    /// A projection of another kind has that name.
    Conflict(String),
}

pub fn decide_registration(current: Option<(&Definition, i64)>, new: &Definition) -> Registration {
    match current {
        None => Registration::Created,
        Some((old, _)) if old.kind != new.kind => Registration::Conflict(format!(
            "projection is {}; it cannot be registered as {} (delete it first)",
            old.kind.as_str(),
            new.kind.as_str()
        )),
        Some((old, _)) if old == new => Registration::Unchanged,
        Some((_, revision)) => Registration::Updated {
            revision: revision + 1,
        },
    }
}

/// The lease a runner holds, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub token: String,
    pub epoch: i64,
    pub expires_at: Ts,
}

/// The lease a call presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedLease {
    pub token: String,
    pub epoch: i64,
}

/// `AcquireProjectionLease`: a free or expired lease is granted at the next epoch (which fences
/// every earlier holder); a live one is not.
pub fn decide_acquire(
    current: Option<&HeldLease>,
    last_epoch: i64,
    now: Ts,
    ttl: std::time::Duration,
    token: String,
) -> Option<HeldLease> {
    match current {
        Some(held) if held.expires_at > now => None,
        _ => Some(HeldLease {
            token,
            epoch: last_epoch + 1,
            expires_at: now.plus(ttl),
        }),
    }
}

/// Why a presented lease no longer counts (the caller gets `ABORTED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRefusal {
    #[error("this projection is run by the server; it takes no runner lease")]
    NotRunnerApplied,
    #[error("the call carries no lease: acquire one with AcquireProjectionLease first")]
    Missing,
    #[error("the lease (epoch {presented}) was taken over (current epoch {current})")]
    Fenced { presented: i64, current: i64 },
    #[error("the lease (epoch {0}) was released")]
    Released(i64),
}

/// Why a runner's call was refused: no such projection, or its lease no longer counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerRefusal {
    #[error("no projection named '{0}' (register it first)")]
    Missing(String),
    #[error(transparent)]
    Lease(#[from] LeaseRefusal),
}

/// Whether a presented lease is the current one. An expired lease nobody has taken since still
/// counts: expiry only lets another runner take it.
pub fn check_lease(
    current: Option<&HeldLease>,
    last_epoch: i64,
    presented: Option<&PresentedLease>,
) -> Result<(), LeaseRefusal> {
    let Some(p) = presented.filter(|p| !p.token.is_empty()) else {
        return Err(LeaseRefusal::Missing);
    };
    match current {
        Some(held) if held.token == p.token && held.epoch == p.epoch => Ok(()),
        Some(held) => Err(LeaseRefusal::Fenced {
            presented: p.epoch,
            current: held.epoch,
        }),
        None if p.epoch == last_epoch => Err(LeaseRefusal::Released(p.epoch)),
        None => Err(LeaseRefusal::Fenced {
            presented: p.epoch,
            current: last_epoch,
        }),
    }
}

/// What the server knows when a runner opens a stream: where the cursor is, how far the last
/// stream delivered, and how often it was opened at this cursor after delivering past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpening {
    pub cursor_seq: i64,
    pub delivered_seq: i64,
    pub redeliveries: i32,
}

/// The redelivery count after this opening, and whether the projection must stop with an error.
pub fn decide_redelivery(facts: StreamOpening) -> (i32, bool) {
    if facts.delivered_seq > facts.cursor_seq {
        let n = facts.redeliveries + 1;
        (n, n >= MAX_REDELIVERIES)
    } else {
        (0, false)
    }
}

/// Read-your-writes: how a projection stands against a target sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Catchup {
    pub caught_up: bool,
    pub current_seq: i64,
    pub target_seq: i64,
    pub behind_by_events: i64,
}

/// Caught up when no event the projection follows lies between its cursor and the target
/// (`pending` counts them; `min_seq` 0 asks nothing).
pub fn catchup(cursor_seq: i64, min_seq: i64, pending: i64) -> Catchup {
    Catchup {
        caught_up: min_seq <= 0 || pending == 0,
        current_seq: cursor_seq,
        target_seq: min_seq.max(0),
        behind_by_events: if min_seq <= 0 { 0 } else { pending },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partitions_come_from_the_key() {
        let data = json!({"customer": {"id": "c-1"}, "n": 7, "flag": true});
        assert_eq!(partition_of("", &data, None), GLOBAL_PARTITION);
        assert_eq!(partition_of("customer.id", &data, None), "c-1");
        assert_eq!(partition_of("data.customer.id", &data, None), "c-1");
        assert_eq!(partition_of("n", &data, None), "7");
        assert_eq!(partition_of("flag", &data, None), "true");
        assert_eq!(partition_of("missing", &data, None), GLOBAL_PARTITION);
        assert_eq!(
            partition_of(ENTITY_PARTITION_KEY, &data, Some("order-1")),
            "order-1"
        );
        assert_eq!(
            partition_of(ENTITY_PARTITION_KEY, &data, None),
            GLOBAL_PARTITION
        );
        assert_eq!(partition_key(""), GLOBAL_PARTITION);
        assert_eq!(partition_key("p"), "p");
    }

    #[test]
    fn names_and_events_are_checked() {
        assert!(check_name("orders.by-customer:v1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").expect_err("a space").contains("' '"));
        assert_eq!(
            check_events(&["a".into(), " a ".into(), "b".into()]).expect("valid"),
            vec!["a", "b"]
        );
        assert!(check_events(&[]).is_err());
        assert!(check_events(&["".into()]).is_err());
    }

    fn def(kind: ProjectionKind, events: &[&str]) -> Definition {
        Definition {
            kind,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            partition_key: String::new(),
            description: String::new(),
            table_sql: None,
            event_handlers: None,
        }
    }

    #[test]
    fn registration_creates_updates_or_refuses() {
        let a = def(ProjectionKind::Managed, &["x"]);
        assert_eq!(decide_registration(None, &a), Registration::Created);
        assert_eq!(
            decide_registration(Some((&a, 3)), &a),
            Registration::Unchanged
        );
        let b = def(ProjectionKind::Managed, &["x", "y"]);
        assert_eq!(
            decide_registration(Some((&a, 3)), &b),
            Registration::Updated { revision: 4 }
        );
        let c = def(ProjectionKind::External, &["x"]);
        assert!(matches!(
            decide_registration(Some((&a, 1)), &c),
            Registration::Conflict(_)
        ));
    }

    #[test]
    fn leases_are_granted_once_and_fence_earlier_holders() {
        let now = Ts::now();
        let ttl = std::time::Duration::from_secs(30);
        let first = decide_acquire(None, 0, now, ttl, "a".into()).expect("free lease");
        assert_eq!(first.epoch, 1);
        assert!(decide_acquire(Some(&first), 1, now, ttl, "b".into()).is_none());
        let later = now.plus(std::time::Duration::from_secs(31));
        let second =
            decide_acquire(Some(&first), 1, later, ttl, "b".into()).expect("expired lease");
        assert_eq!(second.epoch, 2);
        let old = PresentedLease {
            token: "a".into(),
            epoch: 1,
        };
        assert_eq!(
            check_lease(Some(&second), 2, Some(&old)),
            Err(LeaseRefusal::Fenced {
                presented: 1,
                current: 2
            })
        );
        let new = PresentedLease {
            token: "b".into(),
            epoch: 2,
        };
        assert_eq!(check_lease(Some(&second), 2, Some(&new)), Ok(()));
        // Expired but not taken: still the holder.
        assert_eq!(check_lease(Some(&first), 1, Some(&old)), Ok(()));
        assert_eq!(
            check_lease(None, 2, Some(&new)),
            Err(LeaseRefusal::Released(2))
        );
        assert_eq!(
            check_lease(Some(&first), 1, None),
            Err(LeaseRefusal::Missing)
        );
    }

    #[test]
    fn a_runner_that_keeps_failing_stops_after_the_retries() {
        let mut facts = StreamOpening {
            cursor_seq: 10,
            delivered_seq: 12,
            redeliveries: 0,
        };
        for expected in 1..MAX_REDELIVERIES {
            let (n, stop) = decide_redelivery(facts);
            assert_eq!((n, stop), (expected, false));
            facts.redeliveries = n;
        }
        assert_eq!(decide_redelivery(facts), (MAX_REDELIVERIES, true));
        // Progress (nothing delivered past the cursor) resets the count.
        facts.delivered_seq = 10;
        assert_eq!(decide_redelivery(facts), (0, false));
    }

    #[test]
    fn catchup_needs_no_pending_event_up_to_the_target() {
        assert!(catchup(5, 0, 3).caught_up);
        assert!(catchup(5, 9, 0).caught_up);
        let behind = catchup(5, 9, 2);
        assert!(!behind.caught_up);
        assert_eq!(behind.behind_by_events, 2);
        assert_eq!(behind.target_seq, 9);
    }
}
