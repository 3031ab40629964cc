//! CEL trigger expressions: compiled at registration, evaluated against each matching event.

use std::sync::Arc;

use cel::{Context, Program, Value};

/// A compiled CEL expression. Variables: `event` (`name`, `data`, `id`, `metadata`, `ts`) and
/// `data` (the same as `event.data`).
#[derive(Clone)]
pub struct TriggerExpression {
    source: String,
    program: Arc<Program>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid CEL expression '{source_text}': {reason}")]
pub struct ExpressionError {
    source_text: String,
    reason: String,
}

/// What an expression sees of an event.
pub struct EventView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub data: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
    pub timestamp_ms: i64,
}

impl TriggerExpression {
    pub const MAX_LEN: usize = 4096;

    pub fn compile(source: &str) -> Result<Self, ExpressionError> {
        let fail = |reason: String| ExpressionError {
            source_text: source.to_owned(),
            reason,
        };
        if source.trim().is_empty() {
            return Err(fail("expression is empty".into()));
        }
        if source.len() > Self::MAX_LEN {
            return Err(fail(format!("longer than {} characters", Self::MAX_LEN)));
        }
        // The parser can panic on pathological input; a bad registration must be a 400, not a crash.
        let parsed = std::panic::catch_unwind(|| Program::compile(source))
            .map_err(|_| fail("could not be parsed".into()))?;
        let program = parsed.map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            source: source.to_owned(),
            program: Arc::new(program),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True only when the expression evaluates to boolean true. Errors (missing fields,
    /// wrong types) and non-boolean results count as "does not match".
    pub fn matches(&self, event: &EventView<'_>) -> bool {
        let view = serde_json::json!({
            "id": event.id,
            "name": event.name,
            "data": event.data,
            "metadata": event.metadata,
            "ts": event.timestamp_ms,
        });
        let mut ctx = Context::default();
        let (Ok(ev), Ok(data)) = (cel::to_value(&view), cel::to_value(event.data)) else {
            return false;
        };
        ctx.add_variable_from_value("event", ev);
        ctx.add_variable_from_value("data", data);
        matches!(self.program.execute(&ctx), Ok(Value::Bool(true)))
    }
}

/// The concurrency lane of a run: its `concurrency.key` expression (`event.data.customer_id`)
/// evaluated over the triggering event (`{name, data}`), as text. An empty key is one lane for
/// the whole function; a key that does not evaluate puts the run in the `""` lane.
pub fn lane_key(key_expression: &str, event: &serde_json::Value) -> String {
    if key_expression.trim().is_empty() {
        return String::new();
    }
    let Ok(program) = TriggerExpression::compile(key_expression) else {
        return String::new();
    };
    let data = event
        .get("data")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let (Ok(ev), Ok(data)) = (cel::to_value(event), cel::to_value(&data)) else {
        return String::new();
    };
    let mut ctx = Context::default();
    ctx.add_variable_from_value("event", ev);
    ctx.add_variable_from_value("data", data);
    match program.program.execute(&ctx) {
        Ok(Value::String(s)) => s.to_string(),
        Ok(Value::Int(i)) => i.to_string(),
        Ok(Value::UInt(u)) => u.to_string(),
        Ok(Value::Float(f)) => f.to_string(),
        Ok(Value::Bool(b)) => b.to_string(),
        Ok(Value::Null) | Err(_) => String::new(),
        Ok(other) => format!("{other:?}"),
    }
}

impl std::fmt::Debug for TriggerExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TriggerExpression")
            .field(&self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str, data: serde_json::Value) -> bool {
        let meta = serde_json::json!({});
        TriggerExpression::compile(expr)
            .expect("compiles")
            .matches(&EventView {
                id: "e1",
                name: "order.created",
                data: &data,
                metadata: &meta,
                timestamp_ms: 0,
            })
    }

    #[test]
    fn expressions_filter_events() {
        assert!(eval(
            "event.data.amount > 100",
            serde_json::json!({"amount": 500})
        ));
        assert!(!eval(
            "event.data.amount > 100",
            serde_json::json!({"amount": 50})
        ));
        assert!(eval(
            "data.tier == 'gold' && event.name == 'order.created'",
            serde_json::json!({"tier": "gold"})
        ));
        assert!(!eval("event.data.missing > 1", serde_json::json!({})));
        assert!(!eval("event.data.amount", serde_json::json!({"amount": 5})));
    }

    #[test]
    fn bad_expressions_are_refused() {
        assert!(TriggerExpression::compile("event.data.amount >").is_err());
        assert!(TriggerExpression::compile("").is_err());
        assert!(TriggerExpression::compile("((").is_err());
    }
}
