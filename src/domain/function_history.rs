//! A function's history as the SDK lists it: every registration of a new version, status
//! change, rollback and deletion, numbered 1, 2, … in the order they happened (the entry's
//! `entity_version`), each with the definition and status the function had after it.

use serde_json::Value;

use crate::domain::function::{FunctionDefinition, FunctionStatus};
use crate::domain::time::Ts;

/// One `function.*` history entry as the store read it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionEntry {
    pub seq: i64,
    pub recorded_at: Ts,
    pub kind: String,
    pub payload: Value,
}

/// A change of a function, with the state after it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionChange {
    /// 1 for the first change of the function, then 2, 3, …
    pub entity_version: i64,
    pub seq: i64,
    /// `update`, `status_change`, `rollback` or `delete`.
    pub change_type: &'static str,
    /// The definition version after the change.
    pub version: i32,
    pub status: FunctionStatus,
    pub definition: Option<FunctionDefinition>,
    pub actor_id: String,
    pub change_reason: String,
    pub recorded_at: Ts,
}

/// The function's changes, oldest first.
pub fn changes(entries: &[FunctionEntry]) -> Vec<FunctionChange> {
    let mut out: Vec<FunctionChange> = Vec::with_capacity(entries.len());
    let mut status = FunctionStatus::Active;
    let mut version = 0;
    let mut definition: Option<FunctionDefinition> = None;
    for e in entries {
        let p = &e.payload;
        let change_type = match e.kind.as_str() {
            "function.registered" => "update",
            "function.status_changed" => "status_change",
            "function.rolled_back" => "rollback",
            "function.deleted" => "delete",
            _ => continue,
        };
        if let Some(v) = p.get("version").and_then(Value::as_i64) {
            version = i32::try_from(v).unwrap_or(version);
        }
        if let Some(d) = p
            .get("definition")
            .and_then(|d| serde_json::from_value::<FunctionDefinition>(d.clone()).ok())
        {
            definition = Some(d);
        }
        if e.kind == "function.registered" && version == 1 {
            // Registered anew (also after a delete): active again.
            status = FunctionStatus::Active;
        }
        if let Some(s) = p
            .get("status")
            .and_then(Value::as_str)
            .and_then(FunctionStatus::parse)
        {
            status = s;
        }
        let text = |key: &str| {
            p.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push(FunctionChange {
            entity_version: out.len() as i64 + 1,
            seq: e.seq,
            change_type,
            version,
            status,
            definition: definition.clone(),
            actor_id: text("actor_id"),
            change_reason: text("change_reason"),
            recorded_at: e.recorded_at,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(seq: i64, kind: &str, payload: Value) -> FunctionEntry {
        FunctionEntry {
            seq,
            recorded_at: Ts::now(),
            kind: kind.into(),
            payload,
        }
    }

    #[test]
    fn changes_are_numbered_and_carry_the_state_after_them() {
        let d1 = json!({"name": "one", "triggers": []});
        let d2 = json!({"name": "two", "triggers": []});
        let c = changes(&[
            entry(
                3,
                "function.registered",
                json!({"version": 1, "definition": d1}),
            ),
            entry(
                9,
                "function.registered",
                json!({"version": 2, "definition": d2}),
            ),
            entry(
                12,
                "function.status_changed",
                json!({"status": "paused", "actor_id": "k"}),
            ),
            entry(
                15,
                "function.rolled_back",
                json!({"version": 3, "definition": d1, "change_reason": "bad deploy"}),
            ),
        ]);
        let summary: Vec<(i64, &str, i32, FunctionStatus, String)> = c
            .iter()
            .map(|c| {
                (
                    c.entity_version,
                    c.change_type,
                    c.version,
                    c.status,
                    c.definition.as_ref().expect("present").name.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, "update", 1, FunctionStatus::Active, "one".into()),
                (2, "update", 2, FunctionStatus::Active, "two".into()),
                (3, "status_change", 2, FunctionStatus::Paused, "two".into()),
                (4, "rollback", 3, FunctionStatus::Paused, "one".into()),
            ]
        );
        assert_eq!(c[3].change_reason, "bad deploy");
        assert_eq!(c[2].actor_id, "k");
    }
}
