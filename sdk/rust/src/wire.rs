//! JSON ↔ the worker stream's protobuf values: step outputs travel as `google.protobuf.Value`
//! and the triggering event as the proto `Event`, as ironflow-py's schema has them.

use prost_types::value::Kind;
use serde_json::{Map, Value};

use crate::proto::v1 as pb;

pub(crate) fn to_proto(json: &Value) -> prost_types::Value {
    let kind = match json {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(map: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
    }
}

fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    )
}

/// Proto numbers are doubles: an integral one comes back as an integer, so a step that
/// returned `3` replays as `3`, not `3.0` (beyond 2^53 integers were never exact here).
pub(crate) fn to_json(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => {
            Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(to_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

/// A (Struct, Value) payload pair: the Value wins; neither is null.
pub(crate) fn payload(s: Option<&prost_types::Struct>, v: Option<&prost_types::Value>) -> Value {
    match (v, s) {
        (Some(v), _) => to_json(v),
        (None, Some(s)) => struct_json(s),
        (None, None) => Value::Null,
    }
}

/// The triggering event as handlers see it: `{id, name, data, timestamp, version, ...}`.
pub(crate) fn event_json(e: &pb::Event) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(e.id.clone()));
    out.insert("name".into(), Value::String(e.name.clone()));
    out.insert(
        "data".into(),
        payload(e.data.as_ref(), e.data_value.as_ref()),
    );
    if let Some(t) = &e.timestamp {
        let nanos = u32::try_from(t.nanos).unwrap_or(0);
        if let Some(at) = chrono::DateTime::from_timestamp(t.seconds, nanos) {
            out.insert("timestamp".into(), Value::String(at.to_rfc3339()));
        }
    }
    out.insert("version".into(), Value::from(e.version.max(1)));
    if !e.source.is_empty() {
        out.insert("source".into(), Value::String(e.source.clone()));
    }
    if !e.idempotency_key.is_empty() {
        out.insert(
            "idempotency_key".into(),
            Value::String(e.idempotency_key.clone()),
        );
    }
    if let Some(m) = &e.metadata {
        out.insert("metadata".into(), struct_json(m));
    }
    Value::Object(out)
}

/// A step's output as the stream carries it: objects as `output`, anything else as
/// `output_value` (ironflow-py reads either).
pub(crate) fn output_pair(
    json: &Value,
) -> (Option<prost_types::Struct>, Option<prost_types::Value>) {
    match json {
        Value::Object(map) => (Some(to_struct(map)), None),
        other => (None, Some(to_proto(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_the_round_trip_with_integers_intact() {
        let v = json!({"n": 3, "f": 1.5, "s": "x", "l": [1, null, true], "o": {"k": -2}});
        assert_eq!(to_json(&to_proto(&v)), v);
        let (s, value) = output_pair(&v);
        assert_eq!(payload(s.as_ref(), value.as_ref()), v);
        let (s, value) = output_pair(&json!(7));
        assert!(s.is_none());
        assert_eq!(payload(s.as_ref(), value.as_ref()), json!(7));
        assert_eq!(payload(None, None), Value::Null);
    }

    #[test]
    fn the_event_reads_as_handlers_expect() {
        let e = pb::Event {
            id: "e1".into(),
            name: "order.created".into(),
            data_value: Some(to_proto(&json!({"order": 1}))),
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_796_378_400,
                nanos: 0,
            }),
            version: 0,
            ..Default::default()
        };
        let json = event_json(&e);
        assert_eq!(json["data"], json!({"order": 1}));
        assert_eq!(json["version"], 1);
        assert_eq!(json["timestamp"], "2026-12-04T10:00:00+00:00");
        assert!(json.get("source").is_none());
    }
}
