//! Entity streams: the versioning rule (what an append's expected version allows, which version
//! it takes), tombstones, and how a batch of appends to the same streams is decided in order.

use std::collections::HashMap;

use crate::ids::EntityId;

/// The name of the tombstone event that ends a stream (`DeleteStream`).
pub const TOMBSTONE_EVENT: &str = "$stream.deleted";

/// What an append asks of the stream's current version (`AppendEvent.expected_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// `-1`: no check.
    Any,
    /// `0`: the stream must not exist yet.
    NoStream,
    /// `N`: the stream's current version must be `N`.
    Exactly(i64),
}

impl ExpectedVersion {
    /// Parses the wire value: −1, 0 or a positive version; anything else is refused.
    pub fn from_wire(value: i64) -> Result<Self, String> {
        match value {
            -1 => Ok(Self::Any),
            0 => Ok(Self::NoStream),
            n if n > 0 => Ok(Self::Exactly(n)),
            n => Err(format!(
                "expected_version {n}: use -1 (no check), 0 (a new stream) or the stream's current version"
            )),
        }
    }
}

/// A stream's head as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub entity_type: String,
    /// 0 for a stream with no events yet.
    pub version: i64,
    pub deleted: bool,
}

/// One append to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    pub entity_id: EntityId,
    pub entity_type: String,
    pub expected: ExpectedVersion,
    /// The tombstone (`DeleteStream`): allowed on any live stream, ends it.
    pub tombstone: bool,
}

/// Why an append was refused; nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendRefusal {
    #[error(
        "stream '{entity_id}' is at version {actual}; the append expected {}",
        describe(*expected)
    )]
    VersionConflict {
        entity_id: EntityId,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("stream '{entity_id}' was deleted at version {version}; nothing can be appended to it")]
    Deleted { entity_id: EntityId, version: i64 },
    #[error("stream '{entity_id}' has entity type '{actual}', not '{requested}'")]
    TypeMismatch {
        entity_id: EntityId,
        actual: String,
        requested: String,
    },
    #[error("stream '{entity_id}' does not exist")]
    NoSuchStream { entity_id: EntityId },
}

fn describe(expected: ExpectedVersion) -> String {
    match expected {
        ExpectedVersion::Any => "any version".into(),
        ExpectedVersion::NoStream => "a new stream (version 0)".into(),
        ExpectedVersion::Exactly(n) => format!("version {n}"),
    }
}

/// The version an append takes on a stream whose head is `head` (`None`: no such stream), or
/// why it is refused.
pub fn decide_append(
    head: Option<&StreamHead>,
    append: &AppendRequest,
) -> Result<i64, AppendRefusal> {
    let current = head.map_or(0, |h| h.version);
    if let Some(h) = head.filter(|h| h.version > 0) {
        if h.deleted {
            return Err(AppendRefusal::Deleted {
                entity_id: append.entity_id.clone(),
                version: h.version,
            });
        }
        if h.entity_type != append.entity_type {
            return Err(AppendRefusal::TypeMismatch {
                entity_id: append.entity_id.clone(),
                actual: h.entity_type.clone(),
                requested: append.entity_type.clone(),
            });
        }
    } else if append.tombstone {
        return Err(AppendRefusal::NoSuchStream {
            entity_id: append.entity_id.clone(),
        });
    }
    let allowed = match append.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == 0,
        ExpectedVersion::Exactly(n) => current == n,
    };
    if !allowed {
        return Err(AppendRefusal::VersionConflict {
            entity_id: append.entity_id.clone(),
            expected: append.expected,
            actual: current,
        });
    }
    Ok(current + 1)
}

/// What a batch of appends does to the streams it touches: each append's version (or refusal)
/// in order, each decided against the head the earlier appends of the batch left, and the heads
/// to write.
#[derive(Debug, Clone)]
pub struct AppendPlan<K> {
    pub outcomes: Vec<Result<i64, AppendRefusal>>,
    /// Stream → (new head, events added), for the streams at least one append changed.
    pub heads: HashMap<K, (StreamHead, i64)>,
}

/// Decides appends in order against `heads` (the locked heads of every stream they touch),
/// each stream named by a key `K` (the store's: environment and entity).
pub fn plan_appends<K: Clone + Eq + std::hash::Hash>(
    heads: &HashMap<K, StreamHead>,
    appends: &[(K, &AppendRequest)],
) -> AppendPlan<K> {
    let mut changed: HashMap<K, (StreamHead, i64)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(appends.len());
    for (key, append) in appends {
        let head = changed.get(key).map(|(h, _)| h).or_else(|| heads.get(key));
        let outcome = decide_append(head, append);
        if let Ok(version) = outcome {
            let entry = changed.entry(key.clone()).or_insert_with(|| {
                (
                    StreamHead {
                        entity_type: append.entity_type.clone(),
                        version: 0,
                        deleted: false,
                    },
                    0,
                )
            });
            entry.0 = StreamHead {
                entity_type: append.entity_type.clone(),
                version,
                deleted: append.tombstone,
            };
            entry.1 += 1;
        }
        outcomes.push(outcome);
    }
    AppendPlan {
        outcomes,
        heads: changed,
    }
}

/// Whether a snapshot at `version` may be stored on a stream whose head is `head`: the stream
/// must be live and have reached that version, and the type (when given) must be its own.
pub fn check_snapshot(
    entity_id: &EntityId,
    head: Option<&StreamHead>,
    entity_type: &str,
    version: i64,
) -> Result<(), String> {
    let Some(head) = head.filter(|h| h.version > 0) else {
        return Err(format!("stream '{entity_id}' does not exist"));
    };
    if head.deleted {
        return Err(format!(
            "stream '{entity_id}' was deleted at version {}; it takes no snapshots",
            head.version
        ));
    }
    if !entity_type.is_empty() && entity_type != head.entity_type {
        return Err(format!(
            "stream '{entity_id}' has entity type '{}', not '{entity_type}'",
            head.entity_type
        ));
    }
    if version < 1 || version > head.version {
        return Err(format!(
            "entity_version {version}: stream '{entity_id}' has versions 1 to {}",
            head.version
        ));
    }
    Ok(())
}

/// Which way a read walks a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Forward,
    Backward,
}

impl Direction {
    pub fn from_wire(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "forward" | "forwards" | "asc" => Ok(Self::Forward),
            "backward" | "backwards" | "desc" => Ok(Self::Backward),
            other => Err(format!(
                "direction '{other}': use \"forward\" or \"backward\""
            )),
        }
    }
}

/// The advisory-lock keys of the streams `(env, entity)` a batch appends to, sorted and without
/// repeats: every transaction takes them in the same order, so two never wait on each other in a
/// circle, even when two streams share a key. FNV-1a, because the key must be the same on every
/// node and in every build.
pub fn stream_lock_keys<E: AsRef<str>, I: AsRef<str>>(streams: &[(E, I)]) -> Vec<i64> {
    let mut keys: Vec<i64> = streams
        .iter()
        .map(|(env, entity)| {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for byte in env
                .as_ref()
                .bytes()
                .chain([0u8])
                .chain(entity.as_ref().bytes())
            {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            i64::from_ne_bytes(hash.to_ne_bytes())
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntityId {
        EntityId::parse(s).expect("entity id")
    }

    fn append(entity: &str, expected: ExpectedVersion) -> AppendRequest {
        AppendRequest {
            entity_id: id(entity),
            entity_type: "order".into(),
            expected,
            tombstone: false,
        }
    }

    fn head(version: i64) -> StreamHead {
        StreamHead {
            entity_type: "order".into(),
            version,
            deleted: false,
        }
    }

    #[test]
    fn expected_version_parses_the_wire_values() {
        assert_eq!(ExpectedVersion::from_wire(-1), Ok(ExpectedVersion::Any));
        assert_eq!(ExpectedVersion::from_wire(0), Ok(ExpectedVersion::NoStream));
        assert_eq!(
            ExpectedVersion::from_wire(7),
            Ok(ExpectedVersion::Exactly(7))
        );
        assert!(ExpectedVersion::from_wire(-2).is_err());
    }

    #[test]
    fn a_new_stream_starts_at_one() {
        assert_eq!(
            decide_append(None, &append("o", ExpectedVersion::NoStream)),
            Ok(1)
        );
        assert_eq!(
            decide_append(None, &append("o", ExpectedVersion::Any)),
            Ok(1)
        );
        // A head at version 0 is a stream row created and never written: the same as none.
        assert_eq!(
            decide_append(Some(&head(0)), &append("o", ExpectedVersion::NoStream)),
            Ok(1)
        );
    }

    #[test]
    fn expected_version_must_match_the_head() {
        assert_eq!(
            decide_append(Some(&head(3)), &append("o", ExpectedVersion::Exactly(3))),
            Ok(4)
        );
        assert_eq!(
            decide_append(Some(&head(3)), &append("o", ExpectedVersion::Exactly(2))),
            Err(AppendRefusal::VersionConflict {
                entity_id: id("o"),
                expected: ExpectedVersion::Exactly(2),
                actual: 3
            })
        );
        assert!(matches!(
            decide_append(Some(&head(3)), &append("o", ExpectedVersion::NoStream)),
            Err(AppendRefusal::VersionConflict { actual: 3, .. })
        ));
        assert!(matches!(
            decide_append(None, &append("o", ExpectedVersion::Exactly(1))),
            Err(AppendRefusal::VersionConflict { actual: 0, .. })
        ));
        assert_eq!(
            decide_append(Some(&head(3)), &append("o", ExpectedVersion::Any)),
            Ok(4)
        );
    }

    #[test]
    fn the_conflict_message_states_the_actual_version() {
        let refusal = decide_append(
            Some(&head(5)),
            &append("order-1", ExpectedVersion::Exactly(4)),
        )
        .expect_err("conflict");
        assert_eq!(
            refusal.to_string(),
            "stream 'order-1' is at version 5; the append expected version 4"
        );
    }

    #[test]
    fn a_deleted_stream_takes_nothing_and_a_type_must_match() {
        let deleted = StreamHead {
            deleted: true,
            ..head(4)
        };
        assert!(matches!(
            decide_append(Some(&deleted), &append("o", ExpectedVersion::Any)),
            Err(AppendRefusal::Deleted { version: 4, .. })
        ));
        let mut cart = append("o", ExpectedVersion::Any);
        cart.entity_type = "cart".into();
        assert!(matches!(
            decide_append(Some(&head(1)), &cart),
            Err(AppendRefusal::TypeMismatch { .. })
        ));
    }

    #[test]
    fn a_snapshot_needs_a_live_stream_at_that_version() {
        let o = id("o");
        assert!(check_snapshot(&o, None, "order", 1).is_err());
        assert!(check_snapshot(&o, Some(&head(3)), "order", 3).is_ok());
        assert!(check_snapshot(&o, Some(&head(3)), "", 2).is_ok());
        assert!(check_snapshot(&o, Some(&head(3)), "order", 4).is_err());
        assert!(check_snapshot(&o, Some(&head(3)), "order", 0).is_err());
        assert!(check_snapshot(&o, Some(&head(3)), "cart", 1).is_err());
        let deleted = StreamHead {
            deleted: true,
            ..head(3)
        };
        assert!(check_snapshot(&o, Some(&deleted), "order", 2).is_err());
    }

    #[test]
    fn a_tombstone_needs_a_live_stream() {
        let mut tomb = append("o", ExpectedVersion::Any);
        tomb.tombstone = true;
        assert!(matches!(
            decide_append(None, &tomb),
            Err(AppendRefusal::NoSuchStream { .. })
        ));
        assert_eq!(decide_append(Some(&head(2)), &tomb), Ok(3));
    }

    #[test]
    fn a_batch_decides_each_append_against_the_earlier_ones() {
        let heads = HashMap::from([(id("a"), head(2))]);
        let mut tomb = append("a", ExpectedVersion::Any);
        tomb.tombstone = true;
        let appends = [
            append("a", ExpectedVersion::Exactly(2)),
            // Lost the race to the append before it in the same batch.
            append("a", ExpectedVersion::Exactly(2)),
            append("a", ExpectedVersion::Exactly(3)),
            append("b", ExpectedVersion::NoStream),
            append("b", ExpectedVersion::NoStream),
            tomb,
            append("a", ExpectedVersion::Any),
        ];
        let keyed: Vec<(EntityId, &AppendRequest)> =
            appends.iter().map(|a| (a.entity_id.clone(), a)).collect();
        let plan = plan_appends(&heads, &keyed);
        assert_eq!(plan.outcomes[0], Ok(3));
        assert!(matches!(
            plan.outcomes[1],
            Err(AppendRefusal::VersionConflict { actual: 3, .. })
        ));
        assert_eq!(plan.outcomes[2], Ok(4));
        assert_eq!(plan.outcomes[3], Ok(1));
        assert!(plan.outcomes[4].is_err());
        assert_eq!(plan.outcomes[5], Ok(5));
        assert!(matches!(
            plan.outcomes[6],
            Err(AppendRefusal::Deleted { .. })
        ));
        let (a, added) = &plan.heads[&id("a")];
        assert_eq!((a.version, a.deleted, *added), (5, true, 3));
        assert_eq!(plan.heads[&id("b")].0.version, 1);
    }

    #[test]
    fn every_version_is_taken_once_whatever_the_interleaving() {
        // 20 writers that each read version 0 and append with expected 0..: exactly one wins
        // each version, the rest conflict.
        let heads: HashMap<EntityId, StreamHead> = HashMap::new();
        let appends: Vec<AppendRequest> = (0..20)
            .map(|_| append("x", ExpectedVersion::NoStream))
            .collect();
        let keyed: Vec<(EntityId, &AppendRequest)> =
            appends.iter().map(|a| (a.entity_id.clone(), a)).collect();
        let plan = plan_appends(&heads, &keyed);
        assert_eq!(plan.outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    }

    #[test]
    fn stream_lock_keys_are_stable_sorted_and_distinct() {
        let keys = stream_lock_keys(&[("env", "b"), ("env", "a"), ("env", "b")]);
        assert_eq!(keys.len(), 2);
        assert!(keys[0] < keys[1]);
        assert_eq!(keys, stream_lock_keys(&[("env", "a"), ("env", "b")]));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            stream_lock_keys(&[("ab", "c")]),
            stream_lock_keys(&[("a", "bc")])
        );
    }
}
