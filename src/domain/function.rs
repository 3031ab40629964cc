//! Function definitions: what a registration stores, how it is validated and versioned.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::expression::Expression;
use crate::domain::pattern::EventPattern;

/// How the engine reaches the function's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    #[default]
    Pull,
    Push,
}

/// Lifecycle of a function; only active functions are triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionStatus {
    Active,
    Paused,
    Archived,
}

impl FunctionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.strip_prefix("function_status_").unwrap_or(&lower) {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "archived" => Some(Self::Archived),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TriggerDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub initial_delay_ms: i32,
    pub backoff_factor: f64,
    pub max_delay_ms: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub on_exhausted: String,
}

impl RetryPolicy {
    /// Applied when a registration gives no retry policy.
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;
    /// The first retry's delay when the policy gives none.
    pub const DEFAULT_INITIAL_DELAY_MS: i32 = 1000;
    /// How much each retry's delay grows when the policy says nothing.
    pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;
    /// The longest delay between attempts when the policy gives none (5 min).
    pub const DEFAULT_MAX_DELAY_MS: i32 = 300_000;
    /// What a run does when its attempts run out and the function gives no policy: it is held
    /// `paused` for a fix and a resume (its compensations do not run).
    pub const DEFAULT_ON_EXHAUSTED: &'static str = "pause";

    /// What happens when the attempts run out: the policy's `on_exhausted`; a policy that
    /// names none keeps its old meaning, `fail`; no policy at all, the default `pause`.
    pub fn on_exhausted_of(policy: Option<&Self>) -> &str {
        match policy {
            None => Self::DEFAULT_ON_EXHAUSTED,
            Some(p) if p.on_exhausted.is_empty() => "fail",
            Some(p) => &p.on_exhausted,
        }
    }

    pub fn pauses_when_exhausted(policy: Option<&Self>) -> bool {
        Self::on_exhausted_of(policy) == "pause"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConcurrencyLimit {
    pub limit: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DebounceDef {
    pub period_ms: i32,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub max_wait_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CancelOnDef {
    pub event: String,
    #[serde(default)]
    pub r#match: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CircuitBreakerDef {
    pub failure_threshold: i32,
    pub open_duration_ms: i32,
    pub max_open_duration_ms: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ThrottleDef {
    pub limit: i32,
    pub period_ms: i32,
    #[serde(default)]
    pub key: String,
}

/// Everything a registration says about a function. Its canonical JSON is hashed to decide
/// whether a registration is a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub triggers: Vec<TriggerDef>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub timeout_ms: i32,
    #[serde(default)]
    pub concurrency: Option<ConcurrencyLimit>,
    #[serde(default)]
    pub mode: ExecutionMode,
    #[serde(default)]
    pub endpoint_url: String,
    #[serde(default)]
    pub actor_key: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub recording_profile: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub debounce: Option<DebounceDef>,
    #[serde(default)]
    pub cancel_on: Vec<CancelOnDef>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerDef>,
    #[serde(default)]
    pub throttle: Option<ThrottleDef>,
}

/// Why a definition was refused. Each names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DefinitionError {
    #[error("triggers[{index}]: {reason}")]
    Trigger { index: usize, reason: String },
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

impl FunctionDefinition {
    /// Checks the parts the engine relies on: trigger patterns, CEL expressions, limits, URLs.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        for (index, t) in self.triggers.iter().enumerate() {
            let trig_err = |reason: String| DefinitionError::Trigger { index, reason };
            if t.event.is_none() && t.cron.is_none() {
                return Err(trig_err("needs an event or a cron schedule".into()));
            }
            if let Some(ev) = &t.event {
                EventPattern::parse(ev).map_err(|e| trig_err(e.to_string()))?;
            }
            if let Some(cron) = &t.cron {
                crate::domain::schedule::CronSchedule::parse(cron)
                    .map_err(|e| trig_err(format!("cron: {e}")))?;
            }
            if let Some(expr) = t.expression.as_deref().filter(|e| !e.trim().is_empty()) {
                Expression::compile(expr)
                    .map_err(|e| trig_err(format!("expression: invalid CEL expression: {e}")))?;
            }
        }
        let non_negative = |field: &'static str, v: i64| {
            if v < 0 {
                Err(DefinitionError::Field {
                    field,
                    reason: format!("must not be negative (got {v})"),
                })
            } else {
                Ok(())
            }
        };
        non_negative("timeout_ms", self.timeout_ms.into())?;
        if let Some(r) = &self.retry {
            non_negative("retry.max_attempts", r.max_attempts.into())?;
            non_negative("retry.initial_delay_ms", r.initial_delay_ms.into())?;
            non_negative("retry.max_delay_ms", r.max_delay_ms.into())?;
            if r.backoff_factor < 0.0 || !r.backoff_factor.is_finite() {
                return Err(DefinitionError::Field {
                    field: "retry.backoff_factor",
                    reason: format!("must be a finite number >= 0 (got {})", r.backoff_factor),
                });
            }
        }
        if let Some(c) = &self.concurrency {
            non_negative("concurrency.limit", c.limit.into())?;
            if !c.key.trim().is_empty() {
                Expression::compile(&c.key).map_err(|e| DefinitionError::Field {
                    field: "concurrency.key",
                    reason: format!("invalid CEL expression: {e}"),
                })?;
            }
        }
        self.validate_flow_control()?;
        if self.mode == ExecutionMode::Push || !self.endpoint_url.is_empty() {
            validate_endpoint_url(&self.endpoint_url, self.mode)?;
        }
        Ok(())
    }

    /// Debounce, throttle and actor keys: the bounds ironflow-py documents (a period of at least
    /// a second, the scheduler's floor), and one serialisation rule per function.
    fn validate_flow_control(&self) -> Result<(), DefinitionError> {
        let field = |field: &'static str, reason: String| DefinitionError::Field { field, reason };
        if let Some(d) = &self.debounce {
            if d.period_ms < 1000 {
                return Err(field(
                    "debounce.period_ms",
                    format!("must be at least 1000 (got {})", d.period_ms),
                ));
            }
            if d.max_wait_ms != 0 && d.max_wait_ms < i64::from(d.period_ms) {
                return Err(field(
                    "debounce.max_wait_ms",
                    format!(
                        "must be 0 (no bound) or at least period_ms {} (got {})",
                        d.period_ms, d.max_wait_ms
                    ),
                ));
            }
        }
        if let Some(t) = &self.throttle {
            if t.limit < 1 {
                return Err(field(
                    "throttle.limit",
                    format!("must be at least 1 (got {})", t.limit),
                ));
            }
            if t.limit > Self::MAX_THROTTLE_LIMIT {
                return Err(field(
                    "throttle.limit",
                    format!(
                        "must be at most {} (got {})",
                        Self::MAX_THROTTLE_LIMIT,
                        t.limit
                    ),
                ));
            }
            if t.period_ms < 1000 {
                return Err(field(
                    "throttle.period_ms",
                    format!("must be at least 1000 (got {})", t.period_ms),
                ));
            }
        }
        if !self.actor_key.trim().is_empty()
            && self.concurrency.as_ref().is_some_and(|c| c.limit > 0)
        {
            return Err(field(
                "actor_key",
                "an actor key already runs one run at a time per key value; set actor_key or concurrency, not both".into(),
            ));
        }
        Ok(())
    }

    /// The most starts a throttle window remembers (its limit): the window is stored whole.
    pub const MAX_THROTTLE_LIMIT: i32 = 10_000;

    /// The cron triggers, with their index in `triggers`.
    pub fn cron_triggers(&self) -> impl Iterator<Item = (i32, &str)> {
        self.triggers.iter().enumerate().filter_map(|(i, t)| {
            t.cron
                .as_deref()
                .filter(|c| !c.trim().is_empty())
                .map(|c| (i32::try_from(i).unwrap_or(i32::MAX), c))
        })
    }

    /// SHA-256 of the canonical JSON (struct field order, sorted metadata keys).
    pub fn content_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }

    pub fn max_attempts(&self) -> i32 {
        self.retry
            .as_ref()
            .map_or(RetryPolicy::DEFAULT_MAX_ATTEMPTS, |r| {
                if r.max_attempts > 0 {
                    r.max_attempts
                } else {
                    RetryPolicy::DEFAULT_MAX_ATTEMPTS
                }
            })
    }
}

fn validate_endpoint_url(url: &str, mode: ExecutionMode) -> Result<(), DefinitionError> {
    let field = "endpoint_url";
    if url.is_empty() {
        let reason = match mode {
            ExecutionMode::Push => "is required for push mode".to_owned(),
            ExecutionMode::Pull => "must not be empty".to_owned(),
        };
        return Err(DefinitionError::Field { field, reason });
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| DefinitionError::Field {
            field,
            reason: format!("'{url}' must be an http:// or https:// URL"),
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(DefinitionError::Field {
            field,
            reason: format!("'{url}' has no host"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(event: &str) -> FunctionDefinition {
        FunctionDefinition {
            name: "f".into(),
            triggers: vec![TriggerDef {
                event: Some(event.into()),
                ..TriggerDef::default()
            }],
            ..FunctionDefinition::default()
        }
    }

    #[test]
    fn hash_changes_only_with_content() {
        let a = def("order.created");
        assert_eq!(a.content_hash(), def("order.created").content_hash());
        assert_ne!(a.content_hash(), def("order.updated").content_hash());
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(def("order.*").validate().is_ok());
        let err = def("order..x").validate().expect_err("must be refused");
        assert!(err.to_string().starts_with("triggers[0]:"), "{err}");
        let mut push = def("a");
        push.mode = ExecutionMode::Push;
        assert!(
            push.validate()
                .expect_err("must be refused")
                .to_string()
                .contains("required")
        );
        push.endpoint_url = "ftp://x".into();
        assert!(
            push.validate()
                .expect_err("must be refused")
                .to_string()
                .contains("http")
        );
        push.endpoint_url = "https://fn.example.com/api/ironflow".into();
        assert!(push.validate().is_ok());
        let mut cel = def("a");
        cel.triggers[0].expression = Some("event.data.amount >".into());
        assert!(cel.validate().is_err());
    }
}
