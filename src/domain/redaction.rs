//! Redaction: the marker that replaces a payload everywhere it is stored, and the rule that a
//! marker is never redacted twice (so redaction is idempotent and keeps the first hash).

use serde_json::{Value, json};

use crate::domain::time::Ts;

/// The key that marks a redacted value (`{"$redacted": true, "sha256": …, "redactedAt": …}`).
pub const MARKER_KEY: &str = "$redacted";

/// Whether a value is a redaction marker.
pub fn is_redacted(value: Option<&Value>) -> bool {
    value
        .and_then(|v| v.get(MARKER_KEY))
        .is_some_and(|m| m == &Value::Bool(true))
}

/// The marker for `value`: the SHA-256 of its JSON text names what was removed. A marker is
/// returned unchanged, and JSON `null` (nothing stored) stays `null`.
pub fn redact(value: &Value, now: Ts) -> Value {
    if value.is_null() || is_redacted(Some(value)) {
        return value.clone();
    }
    json!({
        MARKER_KEY: true,
        "sha256": super::lifecycle::control::value_hash(value),
        "redactedAt": now.to_rfc3339(),
    })
}

/// `redact` of an optional value.
pub fn redact_opt(value: Option<&Value>, now: Ts) -> Option<Value> {
    value.map(|v| redact(v, now))
}

/// A history entry's payload with the named fields redacted (the payload's other fields, such
/// as step ids, statuses and actors, stay readable).
pub fn redact_fields(payload: &Value, fields: &[&str], now: Ts) -> Value {
    let mut out = payload.clone();
    if let Some(map) = out.as_object_mut() {
        for field in fields {
            if let Some(v) = map.get_mut(*field) {
                *v = redact(v, now);
            }
        }
    }
    out
}

/// The payload fields of history entries that carry user data.
pub const PAYLOAD_FIELDS: &[&str] = &[
    "output",
    "error",
    "previous_output",
    "previous_error",
    "input",
    "data",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_the_value_and_is_stable() {
        let now = Ts::now();
        let m = redact(&json!({"card": "4111"}), now);
        assert!(is_redacted(Some(&m)));
        assert_eq!(m["sha256"].as_str().expect("present").len(), 64);
        assert_eq!(redact(&m, now), m, "a marker is not redacted again");
        assert_eq!(redact(&Value::Null, now), Value::Null);
        let p = redact_fields(&json!({"step_id": "s", "output": 1}), PAYLOAD_FIELDS, now);
        assert_eq!(p["step_id"], "s");
        assert!(is_redacted(Some(&p["output"])));
    }
}
