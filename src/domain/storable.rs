//! The one rule for text that both databases can store: no U+0000 (NUL). Postgres refuses it in
//! `text` and `jsonb` while SQLite would take it, so it is refused everywhere, on both backends,
//! before anything is written, with an error that says where it was found.

use serde_json::Value;

/// A NUL character was found; `path` names where (`data.items[2].name`, `worker_id`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} contains U+0000 (a NUL character), which cannot be stored; remove or escape it")]
pub struct NulError {
    pub path: String,
}

/// Checks one text value (an id, a name, a header) called `field`.
pub fn check_text(field: &str, text: &str) -> Result<(), NulError> {
    if text.contains('\0') {
        Err(NulError {
            path: field.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Checks every string and object key of a JSON value. `root` prefixes the path in the error
/// (`""` for a request body, whose top-level keys are the field names).
pub fn check_json(root: &str, value: &Value) -> Result<(), NulError> {
    // Iterative, so no value is too deep to check; the path is only built for an error.
    let mut stack: Vec<(&Value, Vec<Segment<'_>>)> = vec![(value, Vec::new())];
    while let Some((value, path)) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Err(error_at(root, &path)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    stack.push((item, extended(&path, Segment::Index(i))));
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    let here = extended(&path, Segment::Key(key));
                    if key.contains('\0') {
                        return Err(error_at(root, &here));
                    }
                    stack.push((item, here));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn extended<'a>(path: &[Segment<'a>], next: Segment<'a>) -> Vec<Segment<'a>> {
    let mut path = path.to_vec();
    path.push(next);
    path
}

fn error_at(root: &str, path: &[Segment<'_>]) -> NulError {
    let mut text = root.to_owned();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(&key.replace('\0', "\\u0000"));
            }
            Segment::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    if text.is_empty() {
        text.push_str("the value");
    }
    NulError { path: text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_nul_in_strings_and_keys_with_their_path() {
        assert_eq!(
            check_json("", &json!({"name": "a", "data": {"n": 1}})),
            Ok(())
        );
        let err = check_json("", &json!({"data": {"s": "x\u{0}y"}})).expect_err("refused");
        assert_eq!(err.path, "data.s");
        let err = check_json("", &json!({"steps": [{}, {"output": ["a", "b\u{0}"]}]}))
            .expect_err("refused");
        assert_eq!(err.path, "steps[1].output[1]");
        let err = check_json("data", &json!({"k\u{0}": 1})).expect_err("refused");
        assert_eq!(err.path, "data.k\\u0000");
        assert_eq!(
            check_json("", &json!("\u{0}")).expect_err("refused").path,
            "the value"
        );
        assert!(check_text("worker_id", "w\u{0}").is_err());
        assert!(check_text("worker_id", "w").is_ok());
    }

    proptest::proptest! {
        /// A value is refused exactly when one of its strings or keys holds U+0000.
        #[test]
        fn nul_is_found_wherever_it_is(keys in proptest::collection::vec("\\PC{0,6}", 0..6), nul_at in proptest::option::of(0usize..6)) {
            let mut value = serde_json::Value::Null;
            for (i, key) in keys.iter().enumerate() {
                let text = if nul_at == Some(i) { format!("{key}\u{0}") } else { key.clone() };
                value = json!({"k": [value, text]});
            }
            let has_nul = nul_at.is_some_and(|i| i < keys.len());
            proptest::prop_assert_eq!(check_json("", &value).is_err(), has_nul);
        }
    }
}
