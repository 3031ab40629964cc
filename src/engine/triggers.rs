//! Matching events to function triggers: NATS-style name patterns plus optional CEL filters.

use crate::domain::expression::{Bindings, compiled};
use crate::domain::function::FunctionDefinition;
use crate::domain::pattern::EventPattern;

/// Whether any of the definition's triggers fires for this event.
pub(crate) fn fires(
    definition: &FunctionDefinition,
    event_name: &str,
    bindings: &Bindings,
) -> bool {
    definition.triggers.iter().any(|trigger| {
        let Some(pattern) = trigger.event.as_deref() else {
            return false;
        };
        let name_matches = EventPattern::parse(pattern).is_ok_and(|p| p.matches(event_name));
        name_matches
            && trigger
                .expression
                .as_deref()
                .filter(|e| !e.trim().is_empty())
                .is_none_or(|src| compiled(src).is_some_and(|e| e.matches(bindings)))
    })
}
