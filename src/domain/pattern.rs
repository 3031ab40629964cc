//! NATS-style event name patterns: `order.created`, `order.*` (one token), `order.>` (one or more).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    One,
    Rest,
}

/// A parsed trigger pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    tokens: Vec<Token>,
}

/// Why a pattern was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("event pattern must not be empty")]
    Empty,
    #[error("event pattern '{0}' has an empty token (check for '..' or a leading/trailing '.')")]
    EmptyToken(String),
    #[error("event pattern '{0}': '>' may only be the last token")]
    RestNotLast(String),
    #[error("event pattern '{0}': '*' and '>' must be whole tokens")]
    PartialWildcard(String),
    #[error("event pattern '{0}' may not contain whitespace")]
    Whitespace(String),
    #[error("event pattern is {0} characters; the limit is {max}", max = EventPattern::MAX_LEN)]
    TooLong(usize),
}

impl EventPattern {
    pub const MAX_LEN: usize = 256;

    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > Self::MAX_LEN {
            return Err(PatternError::TooLong(pattern.len()));
        }
        if pattern.contains(char::is_whitespace) {
            return Err(PatternError::Whitespace(pattern.to_owned()));
        }
        let parts: Vec<&str> = pattern.split('.').collect();
        let last = parts.len() - 1;
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let token = match part {
                "" => return Err(PatternError::EmptyToken(pattern.to_owned())),
                "*" => Token::One,
                ">" if i == last => Token::Rest,
                ">" => return Err(PatternError::RestNotLast(pattern.to_owned())),
                p if p.contains(['*', '>']) => {
                    return Err(PatternError::PartialWildcard(pattern.to_owned()));
                }
                p => Token::Literal(p.to_owned()),
            };
            tokens.push(token);
        }
        Ok(Self { tokens })
    }

    /// Whether a concrete event name matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
                Token::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Token::Literal(lit) => {
                    if parts.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self
            .tokens
            .iter()
            .map(|t| match t {
                Token::Literal(s) => s.as_str(),
                Token::One => "*",
                Token::Rest => ">",
            })
            .collect();
        f.write_str(&parts.join("."))
    }
}

/// Checks an event *name* (what is emitted, no wildcards).
pub fn validate_event_name(name: &str) -> Result<(), PatternError> {
    let pattern = EventPattern::parse(name)?;
    if !pattern.is_literal() {
        return Err(PatternError::PartialWildcard(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        EventPattern::parse(p).expect("valid pattern").matches(n)
    }

    #[test]
    fn wildcards_follow_nats_rules() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.created.eu"));
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order.created.eu"));
        assert!(!m("order.*", "order"));
        assert!(m("order.>", "order.created"));
        assert!(m("order.>", "order.created.eu"));
        assert!(!m("order.>", "order"));
        assert!(m("*.created", "user.created"));
        assert!(m(">", "anything.at.all"));
        assert!(!m("order.created", "order"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert_eq!(EventPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            EventPattern::parse("order..x"),
            Err(PatternError::EmptyToken(_))
        ));
        assert!(matches!(
            EventPattern::parse(".order"),
            Err(PatternError::EmptyToken(_))
        ));
        assert!(matches!(
            EventPattern::parse("order.>.x"),
            Err(PatternError::RestNotLast(_))
        ));
        assert!(matches!(
            EventPattern::parse("ord*er"),
            Err(PatternError::PartialWildcard(_))
        ));
        assert!(matches!(
            EventPattern::parse("a b"),
            Err(PatternError::Whitespace(_))
        ));
        assert!(validate_event_name("order.*").is_err());
        assert!(validate_event_name("order.created").is_ok());
    }

    proptest::proptest! {
        /// Patterns parse or are refused, never panic; a literal name matches itself.
        #[test]
        fn patterns_never_panic(pattern in "[a-z.*>\\- ]{0,40}", subject in "[a-z.]{0,30}") {
            if let Ok(p) = EventPattern::parse(&pattern) {
                let _ = p.matches(&subject);
            }
            if EventPattern::parse(&subject).is_ok() && !subject.contains(['*', '>']) {
                proptest::prop_assert!(EventPattern::parse(&subject).is_ok_and(|p| p.matches(&subject)));
            }
        }
    }
}
