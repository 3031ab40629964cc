//! Consumer-group rules: names, settings and their defaults, and how a member settles a message.

use crate::domain::expression::Expression;
use crate::domain::pattern::EventPattern;

/// Redeliveries allowed when a group does not say (`max_redeliveries: 0`).
pub const DEFAULT_MAX_REDELIVERIES: i32 = 10;
/// Unacked messages one member may hold when a group does not say (`max_inflight: 0`).
pub const DEFAULT_MAX_INFLIGHT: i32 = 100;
/// Largest `max_inflight` accepted.
pub const MAX_INFLIGHT_LIMIT: i32 = 10_000;
/// Longest redelivery delay accepted (one day).
pub const MAX_REDELIVER_DELAY_MS: i32 = 86_400_000;
/// How long a member has to settle a message before it goes to another member.
pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Each message stays with its member until acked, nak'd or terminated (at least once).
    Manual,
    /// A message is done once handed out (at most once).
    Auto,
}

impl AckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Auto => "auto",
        }
    }

    pub fn parse_stored(s: &str) -> Self {
        if s == "auto" {
            Self::Auto
        } else {
            Self::Manual
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStatus {
    Active,
    /// Messages keep queueing; members receive nothing until it is active again.
    Paused,
}

impl GroupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
        }
    }

    pub fn parse_stored(s: &str) -> Self {
        if s == "paused" {
            Self::Paused
        } else {
            Self::Active
        }
    }
}

/// A group's settings, validated: zero values already replaced by their defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    pub pattern: String,
    pub filter_expr: String,
    pub ack_mode: AckMode,
    pub max_inflight: i32,
    /// Deliveries after the first before a message becomes a dead letter; `-1` is unlimited.
    pub max_redeliveries: i32,
    pub redeliver_delay_ms: i32,
    pub metadata: serde_json::Value,
    pub status: GroupStatus,
}

/// Settings as a client sends them (zero means "the default").
#[derive(Debug, Clone, Default)]
pub struct GroupSettingsInput {
    pub pattern: String,
    pub filter_expr: String,
    pub ack_mode: Option<AckMode>,
    pub max_inflight: i32,
    pub max_redeliveries: i32,
    pub redeliver_delay_ms: i32,
    pub metadata: serde_json::Value,
    pub status: Option<GroupStatus>,
}

impl GroupSettings {
    /// Validates a client's settings; the error names the field.
    pub fn parse(input: GroupSettingsInput) -> Result<Self, String> {
        let pattern = input.pattern.trim().to_owned();
        let pattern = pattern
            .strip_prefix("topic:")
            .map(str::to_owned)
            .unwrap_or(pattern);
        if pattern.is_empty() {
            return Err("pattern is required (a topic pattern such as orders.*)".into());
        }
        EventPattern::parse(&pattern)
            .map_err(|e| format!("pattern: {e}").replace("event pattern", "pattern"))?;
        let filter_expr = input.filter_expr.trim().to_owned();
        if !filter_expr.is_empty() {
            Expression::compile(&filter_expr)
                .map_err(|e| format!("filter_expr: invalid CEL expression: {e}"))?;
        }
        let max_inflight = match input.max_inflight {
            0 => DEFAULT_MAX_INFLIGHT,
            n if (1..=MAX_INFLIGHT_LIMIT).contains(&n) => n,
            n => {
                return Err(format!(
                    "max_inflight must be between 1 and {MAX_INFLIGHT_LIMIT} (got {n})"
                ));
            }
        };
        let max_redeliveries = match input.max_redeliveries {
            0 => DEFAULT_MAX_REDELIVERIES,
            n if n < 0 => -1,
            n => n,
        };
        if !(0..=MAX_REDELIVER_DELAY_MS).contains(&input.redeliver_delay_ms) {
            return Err(format!(
                "redeliver_delay_ms must be between 0 and {MAX_REDELIVER_DELAY_MS} (got {})",
                input.redeliver_delay_ms
            ));
        }
        let metadata = match input.metadata {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            m @ serde_json::Value::Object(_) => m,
            _ => return Err("metadata must be an object".into()),
        };
        Ok(Self {
            pattern,
            filter_expr,
            ack_mode: input.ack_mode.unwrap_or(AckMode::Manual),
            max_inflight,
            max_redeliveries,
            redeliver_delay_ms: input.redeliver_delay_ms,
            metadata,
            status: input.status.unwrap_or(GroupStatus::Active),
        })
    }

    /// How many deliveries a message may have in all (`i32::MAX` when unlimited).
    pub fn max_deliveries(&self) -> i32 {
        if self.max_redeliveries < 0 {
            i32::MAX
        } else {
            self.max_redeliveries.saturating_add(1)
        }
    }
}

/// Group names: 1 to 128 letters, digits, `-`, `_` and `.`.
pub fn validate_group_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "consumer group name '{name}' must be 1 to 128 characters of letters, digits, '-', '_' and '.'"
        ))
    }
}

/// Consumer ids name a member; any non-empty printable string up to 256 characters.
pub fn validate_consumer_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        Err("consumer_id must be 1 to 256 printable characters".into())
    } else {
        Ok(())
    }
}

/// What a member says about a message it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: never delivered again.
    Ack,
    /// Not now: deliver again (to any member) after the delay.
    Nak { delay_ms: i32 },
    /// Never: the message becomes a dead letter.
    Term,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_take_defaults() {
        let s = GroupSettings::parse(GroupSettingsInput {
            pattern: "orders.*".into(),
            ..Default::default()
        })
        .expect("test value");
        assert_eq!(s.max_inflight, DEFAULT_MAX_INFLIGHT);
        assert_eq!(s.max_deliveries(), DEFAULT_MAX_REDELIVERIES + 1);
        assert_eq!(s.ack_mode, AckMode::Manual);
        let unlimited = GroupSettings::parse(GroupSettingsInput {
            pattern: "topic:orders.>".into(),
            max_redeliveries: -1,
            ..Default::default()
        })
        .expect("test value");
        assert_eq!(unlimited.pattern, "orders.>");
        assert_eq!(unlimited.max_deliveries(), i32::MAX);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = |input: GroupSettingsInput| GroupSettings::parse(input).expect_err("test error");
        assert!(bad(GroupSettingsInput::default()).contains("pattern is required"));
        assert!(
            bad(GroupSettingsInput {
                pattern: "a..b".into(),
                ..Default::default()
            })
            .starts_with("pattern")
        );
        assert!(
            bad(GroupSettingsInput {
                pattern: "a".into(),
                filter_expr: "data.x ==".into(),
                ..Default::default()
            })
            .starts_with("filter_expr")
        );
        assert!(
            bad(GroupSettingsInput {
                pattern: "a".into(),
                max_inflight: -3,
                ..Default::default()
            })
            .contains("max_inflight")
        );
        assert!(validate_group_name("workers.v1").is_ok());
        assert!(validate_group_name("bad name").is_err());
    }
}
