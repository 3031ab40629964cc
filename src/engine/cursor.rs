//! Opaque keyset cursors: `base64url("<kind>:<position>")`. Clients pass them back unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::EngineError;

pub(crate) fn encode(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

pub(crate) fn decode(cursor: &str, kind: &str) -> Result<String, EngineError> {
    let invalid = || {
        EngineError::InvalidArgument(format!(
            "invalid cursor '{cursor}': pass back the next_cursor of a previous page unchanged"
        ))
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let position = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|p| !p.is_empty())
        .ok_or_else(invalid)?;
    Ok(position.to_owned())
}

/// A sequence-number cursor (events, runs).
pub(crate) fn decode_seq(cursor: &str, kind: &str) -> Result<i64, EngineError> {
    decode(cursor, kind)?.parse::<i64>().map_err(|_| {
        EngineError::InvalidArgument(format!(
            "invalid cursor '{cursor}': pass back the next_cursor of a previous page unchanged"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode("e", "42");
        assert_eq!(decode_seq(&c, "e").ok(), Some(42));
        assert!(
            decode_seq(&c, "r").is_err(),
            "a cursor of another list is refused"
        );
        assert!(decode_seq("not-a-cursor!", "e").is_err());
        assert!(decode_seq(&encode("e", "x"), "e").is_err());
    }

    proptest::proptest! {
        /// Any text decodes to a value or an error, never a panic; what is encoded comes back.
        #[test]
        fn cursors_never_panic(text in ".*", kind in "[a-z]{1,3}", position in "[0-9]{1,18}") {
            let _ = decode_seq(&text, &kind);
            let _ = decode(&text, &kind);
            let encoded = encode(&kind, &position);
            proptest::prop_assert_eq!(decode(&encoded, &kind).ok(), Some(position));
        }
    }
}
