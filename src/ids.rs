//! Identifier newtypes: parsed once at the edge, carried typed through the engine and store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a user-supplied identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters; the limit is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} '{value}' may contain only letters, digits and '-', '_', '.', ':', '/'")]
    BadCharacter { kind: &'static str, value: String },
    #[error("{kind} must not contain control characters")]
    Control { kind: &'static str },
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from our own store (already validated when written).
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

macro_rules! generated_id {
    ($(#[$doc:meta])* $name:ident) => {
        text_id!($(#[$doc])* $name);

        impl $name {
            /// A new time-ordered id (UUIDv7), so ids sort roughly by creation.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// Parses an id given by a client; ours are UUIDs.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                parse_text(stringify!($name), value, 64).map(Self)
            }
        }
    };
}

text_id!(
    /// A function's id, chosen by the user (`send-welcome-email`).
    FunctionId
);
generated_id!(
    /// One execution of a function.
    RunId
);
generated_id!(
    /// One stored event.
    EventId
);
generated_id!(
    /// An environment (`default`, `staging`, …) inside a project.
    EnvId
);
generated_id!(
    /// An organisation, the top of the tenancy tree.
    OrgId
);
generated_id!(
    /// A project inside an organisation.
    ProjectId
);
generated_id!(
    /// An API key's public id (never the secret).
    ApiKeyId
);

impl FunctionId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(value: &str) -> Result<Self, IdError> {
        parse_text("function id", value, Self::MAX_LEN).map(Self)
    }
}

text_id!(
    /// The entity an event stream belongs to (`order-42`), chosen by the user.
    EntityId
);

impl EntityId {
    pub const MAX_LEN: usize = 256;

    /// Any printable text up to [`Self::MAX_LEN`] characters: entity ids are often natural keys
    /// (`user@example.com`, `order/2026/42`), so only control characters are refused.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let kind = "entity_id";
        if value.is_empty() {
            return Err(IdError::Empty { kind });
        }
        let len = value.chars().count();
        if len > Self::MAX_LEN {
            return Err(IdError::TooLong {
                kind,
                len,
                max: Self::MAX_LEN,
            });
        }
        if value.chars().any(char::is_control) {
            return Err(IdError::Control { kind });
        }
        Ok(Self(value.to_owned()))
    }
}

fn parse_text(kind: &'static str, value: &str, max: usize) -> Result<String, IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::TooLong { kind, len, max });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/');
    if !value.chars().all(allowed) {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_are_checked() {
        assert!(FunctionId::parse("send-welcome_email.v2").is_ok());
        assert_eq!(
            FunctionId::parse(""),
            Err(IdError::Empty {
                kind: "function id"
            })
        );
        assert!(matches!(
            FunctionId::parse("has space"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(matches!(
            FunctionId::parse(&"a".repeat(129)),
            Err(IdError::TooLong { len: 129, .. })
        ));
    }

    #[test]
    fn generated_ids_are_time_ordered() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert!(a < b, "{a} should sort before {b}");
        assert!(RunId::parse(a.as_str()).is_ok());
    }

    proptest::proptest! {
        /// Ids parse or are refused with an error, never a panic; accepted ones round-trip.
        #[test]
        fn ids_never_panic(text in "\\PC{0,300}") {
            if let Ok(id) = RunId::parse(&text) {
                proptest::prop_assert_eq!(RunId::parse(id.as_str()).ok(), Some(id));
            }
            if let Ok(id) = FunctionId::parse(&text) {
                proptest::prop_assert_eq!(FunctionId::parse(id.as_str()).ok(), Some(id));
            }
            let _ = EventId::parse(&text);
        }
    }
}
