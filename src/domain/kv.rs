//! KV store rules: bucket and key names, conditional writes, bucket settings.

use crate::domain::pattern::EventPattern;

/// Why a KV name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvNameError {
    #[error("bucket name '{0}' must be 1 to 64 characters of letters, digits, '-' and '_'")]
    Bucket(String),
    #[error(
        "key '{0}' must be 1 to 1024 characters of letters, digits and '-', '_', '/', '=', '.', with no empty '.'-separated token"
    )]
    Key(String),
}

pub fn validate_bucket(name: &str) -> Result<(), KvNameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(KvNameError::Bucket(name.to_owned()))
    }
}

pub fn validate_key(key: &str) -> Result<(), KvNameError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '=' | '.'))
        && key.split('.').all(|t| !t.is_empty());
    if ok {
        Ok(())
    } else {
        Err(KvNameError::Key(key.to_owned()))
    }
}

/// A key filter for listings: NATS wildcards over `.`-separated keys.
pub fn key_filter(filter: &str) -> Result<EventPattern, String> {
    EventPattern::parse(filter)
        .map_err(|e| format!("filter: {e}").replace("event pattern", "key filter"))
}

/// What a write requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCondition {
    None,
    /// `If-None-Match: *`: only if the key has no live value (absent, deleted or expired).
    Absent,
    /// `If-Match: <revision>`: only if the key's latest revision is this one.
    Revision(i64),
}

#[derive(Debug, Clone)]
pub struct BucketSettings {
    pub name: String,
    pub description: String,
    pub ttl_seconds: i64,
    pub max_value_size: i64,
    pub max_bytes: i64,
    pub history: i32,
}

impl BucketSettings {
    pub const MAX_HISTORY: i32 = 64;

    pub fn validate(&self) -> Result<(), String> {
        validate_bucket(&self.name).map_err(|e| e.to_string())?;
        for (field, v) in [
            ("ttl_seconds", self.ttl_seconds),
            ("max_value_size", self.max_value_size),
            ("max_bytes", self.max_bytes),
        ] {
            if v < 0 {
                return Err(format!("{field} must not be negative (got {v})"));
            }
        }
        if !(0..=Self::MAX_HISTORY).contains(&self.history) {
            return Err(format!(
                "history must be between 1 and {} (got {})",
                Self::MAX_HISTORY,
                self.history
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_bucket("orders_v2").is_ok());
        assert!(validate_bucket("bad name").is_err());
        assert!(validate_bucket("").is_err());
        assert!(validate_key("user.42/profile").is_ok());
        assert!(validate_key("user..42").is_err());
        assert!(validate_key("has space").is_err());
        assert!(key_filter("user.*").is_ok_and(|p| p.matches("user.1") && !p.matches("order.1")));
        let bad = BucketSettings {
            name: "b".into(),
            description: String::new(),
            ttl_seconds: -1,
            max_value_size: 0,
            max_bytes: 0,
            history: 1,
        };
        assert!(bad.validate().is_err());
    }
}
