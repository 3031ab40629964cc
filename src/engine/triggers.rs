//! Matching events to function triggers: NATS-style name patterns plus optional CEL filters.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::expression::{EventView, TriggerExpression};
use crate::domain::function::FunctionDefinition;
use crate::domain::pattern::EventPattern;

/// Compiled CEL programs by source text, so an emit does not re-parse every expression.
#[derive(Default)]
pub(crate) struct TriggerCache {
    expressions: Mutex<HashMap<String, Option<TriggerExpression>>>,
}

impl TriggerCache {
    /// Bounded so that a stream of distinct expressions cannot grow memory without limit.
    const MAX_ENTRIES: usize = 4096;

    fn expression(&self, source: &str) -> Option<TriggerExpression> {
        let mut cache = self
            .expressions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.get(source) {
            return hit.clone();
        }
        if cache.len() >= Self::MAX_ENTRIES {
            cache.clear();
        }
        // Stored definitions were validated at registration; a failure here means "no match".
        let compiled = TriggerExpression::compile(source).ok();
        cache.insert(source.to_owned(), compiled.clone());
        compiled
    }

    /// Whether any of the definition's triggers fires for this event.
    pub(crate) fn fires(&self, definition: &FunctionDefinition, event: &EventView<'_>) -> bool {
        definition.triggers.iter().any(|trigger| {
            let Some(pattern) = trigger.event.as_deref() else {
                return false;
            };
            let name_matches = EventPattern::parse(pattern).is_ok_and(|p| p.matches(event.name));
            name_matches
                && trigger
                    .expression
                    .as_deref()
                    .filter(|e| !e.trim().is_empty())
                    .is_none_or(|src| self.expression(src).is_some_and(|e| e.matches(event)))
        })
    }
}
