//! Event schemas: compiling a registered JSON Schema, checking an event against it, the
//! enforcement decision (off / warn / reject), and upcasting data from an older schema version
//! to a newer one.
//!
//! Upcasters are declared in the newer version's schema document, under the annotation
//! `x-ironflow-upcast` (JSON Schema ignores unknown keywords):
//! `{"from": 1, "rename": {"old": "new"}, "remove": ["field"], "set": {"field": value},
//! "description": "…"}`. Without it, version N upcasts from the registered version just below it
//! by filling in the `default` of every top-level property the data lacks. As in the SDKs, each
//! upcaster jumps from its `from` to its own version.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::redaction::is_redacted;

/// The annotation that declares how data reaches this version from an older one.
pub const UPCAST_KEY: &str = "x-ironflow-upcast";
/// The annotation that sets the enforcement mode of an event name (on its latest version).
pub const ENFORCEMENT_KEY: &str = "x-ironflow-enforcement";

/// What the server does with an event that does not conform to its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Nothing is checked.
    #[default]
    Off,
    /// Stored, flagged with the reason, counted.
    Warn,
    /// Refused with a 4xx naming the failing path; nothing is written.
    Reject,
}

impl Enforcement {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" | "" => Ok(Self::Off),
            "warn" => Ok(Self::Warn),
            "reject" => Ok(Self::Reject),
            other => Err(format!(
                "enforcement mode '{other}': use \"off\", \"warn\" or \"reject\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Warn => "warn",
            Self::Reject => "reject",
        }
    }
}

/// A registered schema document, parsed.
#[derive(Debug, Clone)]
pub struct SchemaDoc {
    pub version: i32,
    pub document: Value,
    pub hash: String,
}

/// The SHA-256 (hex) of a schema document's text as registered.
pub fn schema_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Parses and compiles a schema as `RegisterSchema` receives it; the error says what is wrong.
pub fn parse_schema(text: &str) -> Result<Value, String> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| format!("schema_json is not valid JSON: {e}"))?;
    if !(document.is_object() || document.is_boolean()) {
        return Err("schema_json must be a JSON Schema object (or true/false)".into());
    }
    compile(&document)?;
    if let Some(mode) = document.get(ENFORCEMENT_KEY) {
        let mode = mode
            .as_str()
            .ok_or_else(|| format!("{ENFORCEMENT_KEY} must be a string"))?;
        Enforcement::parse(mode).map_err(|e| format!("{ENFORCEMENT_KEY}: {e}"))?;
    }
    if let Some(spec) = document.get(UPCAST_KEY) {
        UpcastSpec::parse(spec).map_err(|e| format!("{UPCAST_KEY}: {e}"))?;
    }
    Ok(document)
}

/// Compiles a document (refusing one that is not a valid JSON Schema, or that refers to a
/// remote document: schemas resolve nothing over the network or the file system).
pub fn compile(document: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(document).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            format!("not a valid JSON Schema: {e}")
        } else {
            format!("not a valid JSON Schema at {at}: {e}")
        }
    })
}

/// Why an event does not conform: the first failing location (a JSON pointer into the event's
/// data; empty for the root) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "data{at}: {}", self.message)
    }
}

/// Checks data against a compiled schema. Redacted data is never checked.
pub fn check(validator: &jsonschema::Validator, data: &Value) -> Result<(), Violation> {
    if is_redacted(Some(data)) {
        return Ok(());
    }
    match validator.iter_errors(data).next() {
        None => Ok(()),
        Some(e) => Err(Violation {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The enforcement mode of an event name: its latest schema's annotation, else the server's.
pub fn effective_mode(server: Enforcement, latest: Option<&Value>) -> Enforcement {
    latest
        .and_then(|d| d.get(ENFORCEMENT_KEY))
        .and_then(Value::as_str)
        .and_then(|m| Enforcement::parse(m).ok())
        .unwrap_or(server)
}

/// Which registered version an event of `version` is checked against: its own (0: the latest).
/// `None` when that version is not registered.
pub fn governing(schemas: &[SchemaDoc], version: i32) -> Option<&SchemaDoc> {
    if version <= 0 {
        schemas.iter().max_by_key(|s| s.version)
    } else {
        schemas.iter().find(|s| s.version == version)
    }
}

/// False when a schema accepts every payload (it constrains nothing): `true`, `{}`, or an
/// object of annotations only. A heuristic over the keywords that assert something.
pub fn asserts_anything(document: &Value) -> bool {
    const ASSERTING: &[&str] = &[
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "patternProperties",
        "additionalProperties",
        "items",
        "prefixItems",
        "contains",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "$ref",
        "dependentRequired",
        "dependentSchemas",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
    ];
    match document {
        Value::Bool(b) => !b,
        Value::Object(map) => map.keys().any(|k| ASSERTING.contains(&k.as_str())),
        _ => false,
    }
}

/// One upcaster: how data of version `from` becomes data of version `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpcastSpec {
    pub from: Option<i32>,
    pub rename: Vec<(String, String)>,
    pub remove: Vec<String>,
    pub set: Map<String, Value>,
    pub description: Option<String>,
}

impl UpcastSpec {
    fn parse(spec: &Value) -> Result<Self, String> {
        let obj = spec.as_object().ok_or("must be an object")?;
        for key in obj.keys() {
            if !["from", "rename", "remove", "set", "description"].contains(&key.as_str()) {
                return Err(format!(
                    "unknown key '{key}' (use from, rename, remove, set, description)"
                ));
            }
        }
        let from = match obj.get("from") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or("from must be a positive version")?,
            ),
        };
        let rename = match obj.get("rename") {
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|to| (k.clone(), to.to_owned()))
                        .ok_or_else(|| format!("rename.{k} must be a field name"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("rename must be an object {\"old\": \"new\"}".into()),
        };
        let remove = match obj.get("remove") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or("remove lists field names")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("remove must be an array of field names".into()),
        };
        let set = match obj.get("set") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err("set must be an object".into()),
        };
        let description = obj
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            from,
            rename,
            remove,
            set,
            description,
        })
    }
}

/// One upcaster applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcastStep {
    pub from_version: i32,
    pub to_version: i32,
    pub description: String,
}

/// Why data could not be upcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error("from_version {from} is newer than to_version {to}")]
    Backwards { from: i32, to: i32 },
    #[error("version {0} is not registered")]
    Unregistered(i32),
    #[error("no upcaster leads on from version {0} towards the target version")]
    Broken(i32),
}

/// Upcasts `data` from `from` to `to` over the registered schemas. Redacted data passes
/// unchanged (there is nothing to transform).
pub fn upcast(
    schemas: &[SchemaDoc],
    from: i32,
    to: i32,
    data: &Value,
) -> Result<(Value, Vec<UpcastStep>), UpcastError> {
    if from > to {
        return Err(UpcastError::Backwards { from, to });
    }
    for v in [from, to] {
        if !schemas.iter().any(|s| s.version == v) {
            return Err(UpcastError::Unregistered(v));
        }
    }
    let mut sorted: Vec<&SchemaDoc> = schemas.iter().collect();
    sorted.sort_by_key(|s| s.version);
    // Each version's upcaster: where it starts, and what it does.
    let upcasters: Vec<(i32, &SchemaDoc, UpcastSpec)> = sorted
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, s)| {
            let spec = s
                .document
                .get(UPCAST_KEY)
                .and_then(|v| UpcastSpec::parse(v).ok())
                .unwrap_or(UpcastSpec {
                    from: None,
                    rename: Vec::new(),
                    remove: Vec::new(),
                    set: Map::new(),
                    description: None,
                });
            let start = spec.from.unwrap_or(sorted[i - 1].version);
            (start < s.version).then_some((start, *s, spec))
        })
        .collect();
    let mut current = from;
    let mut value = data.clone();
    let mut steps = Vec::new();
    let redacted = is_redacted(Some(data));
    while current < to {
        // The upcaster from here that goes furthest without passing the target.
        let next = upcasters
            .iter()
            .filter(|(start, s, _)| *start == current && s.version <= to)
            .max_by_key(|(_, s, _)| s.version)
            .ok_or(UpcastError::Broken(current))?;
        let (_, target, spec) = next;
        if !redacted {
            value = apply_upcast(&value, spec, &target.document);
        }
        steps.push(UpcastStep {
            from_version: current,
            to_version: target.version,
            description: spec
                .description
                .clone()
                .unwrap_or_else(|| describe_upcast(spec, &target.document)),
        });
        current = target.version;
    }
    Ok((value, steps))
}

fn apply_upcast(data: &Value, spec: &UpcastSpec, target: &Value) -> Value {
    let Value::Object(map) = data else {
        return data.clone();
    };
    let mut out = map.clone();
    for (old, new) in &spec.rename {
        if let Some(v) = out.remove(old) {
            out.insert(new.clone(), v);
        }
    }
    for field in &spec.remove {
        out.remove(field);
    }
    for (k, v) in &spec.set {
        out.insert(k.clone(), v.clone());
    }
    for (name, default) in defaults(target) {
        out.entry(name).or_insert(default);
    }
    Value::Object(out)
}

/// The `default` of each top-level property of a schema.
fn defaults(schema: &Value) -> Vec<(String, Value)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn describe_upcast(spec: &UpcastSpec, target: &Value) -> String {
    let mut parts = Vec::new();
    for (old, new) in &spec.rename {
        parts.push(format!("rename {old} to {new}"));
    }
    for f in &spec.remove {
        parts.push(format!("remove {f}"));
    }
    for k in spec.set.keys() {
        parts.push(format!("set {k}"));
    }
    let filled: Vec<String> = defaults(target).into_iter().map(|(k, _)| k).collect();
    if !filled.is_empty() {
        parts.push(format!("default {}", filled.join(", ")));
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(version: i32, document: Value) -> SchemaDoc {
        SchemaDoc {
            version,
            hash: schema_hash(&document.to_string()),
            document,
        }
    }

    #[test]
    fn a_schema_that_is_not_json_schema_is_refused() {
        assert!(
            parse_schema("{")
                .expect_err("bad json")
                .contains("not valid JSON")
        );
        assert!(
            parse_schema(r#"{"type": "nonsense"}"#)
                .expect_err("bad schema")
                .contains("not a valid JSON Schema")
        );
        assert!(parse_schema("[1]").is_err());
        assert!(parse_schema(r#"{"type":"object","x-ironflow-enforcement":"loud"}"#).is_err());
        assert!(parse_schema(r#"{"type":"object","x-ironflow-upcast":{"frm":1}}"#).is_err());
        assert!(parse_schema(r#"{"type":"object","required":["a"]}"#).is_ok());
    }

    #[test]
    fn a_violation_names_the_failing_path() {
        let v = compile(&json!({"type":"object","properties":{"total":{"type":"number"}}}))
            .expect("compiles");
        let err = check(&v, &json!({"total": "ten"})).expect_err("violation");
        assert_eq!(err.path, "/total");
        assert!(err.to_string().starts_with("data/total: "));
        assert!(check(&v, &json!({"total": 10})).is_ok());
        assert!(check(&v, &json!({"$redacted": true, "sha256": "x"})).is_ok());
    }

    #[test]
    fn the_mode_comes_from_the_latest_schema_or_the_server() {
        assert_eq!(effective_mode(Enforcement::Off, None), Enforcement::Off);
        assert_eq!(
            effective_mode(
                Enforcement::Warn,
                Some(&json!({"x-ironflow-enforcement": "reject"}))
            ),
            Enforcement::Reject
        );
        assert_eq!(
            effective_mode(Enforcement::Warn, Some(&json!({"type": "object"}))),
            Enforcement::Warn
        );
    }

    #[test]
    fn version_zero_is_checked_against_the_latest() {
        let schemas = vec![doc(1, json!({})), doc(3, json!({"type": "object"}))];
        assert_eq!(governing(&schemas, 0).map(|s| s.version), Some(3));
        assert_eq!(governing(&schemas, 1).map(|s| s.version), Some(1));
        assert!(governing(&schemas, 2).is_none());
    }

    #[test]
    fn permissive_schemas_assert_nothing() {
        assert!(!asserts_anything(&json!({})));
        assert!(!asserts_anything(&json!(true)));
        assert!(!asserts_anything(
            &json!({"title": "order", "description": "x"})
        ));
        assert!(asserts_anything(&json!({"type": "object"})));
        assert!(asserts_anything(&json!(false)));
    }

    #[test]
    fn upcasting_chains_registered_versions() {
        let schemas = vec![
            doc(1, json!({"type": "object"})),
            doc(
                2,
                json!({"type": "object", "x-ironflow-upcast": {"rename": {"amount": "total"}}}),
            ),
            doc(
                3,
                json!({"type": "object", "properties": {"currency": {"default": "EUR"}}}),
            ),
        ];
        let (data, steps) = upcast(&schemas, 1, 3, &json!({"amount": 5})).expect("upcasts");
        assert_eq!(data, json!({"total": 5, "currency": "EUR"}));
        assert_eq!(
            steps,
            vec![
                UpcastStep {
                    from_version: 1,
                    to_version: 2,
                    description: "rename amount to total".into()
                },
                UpcastStep {
                    from_version: 2,
                    to_version: 3,
                    description: "default currency".into()
                },
            ]
        );
        let (same, none) = upcast(&schemas, 2, 2, &json!({"a": 1})).expect("no-op");
        assert_eq!((same, none.len()), (json!({"a": 1}), 0));
    }

    #[test]
    fn an_upcaster_jumps_to_its_own_version() {
        let schemas = vec![
            doc(1, json!({})),
            doc(2, json!({})),
            doc(
                3,
                json!({"x-ironflow-upcast": {"from": 1, "set": {"v": 3}}}),
            ),
        ];
        let (data, steps) = upcast(&schemas, 1, 3, &json!({})).expect("upcasts");
        assert_eq!(data, json!({"v": 3}));
        assert_eq!(steps.len(), 1);
        // From 2 there is no way to 3: v3 starts from 1.
        assert_eq!(
            upcast(&schemas, 2, 3, &json!({})),
            Err(UpcastError::Broken(2))
        );
        assert_eq!(
            upcast(&schemas, 3, 1, &json!({})),
            Err(UpcastError::Backwards { from: 3, to: 1 })
        );
        assert_eq!(
            upcast(&schemas, 1, 9, &json!({})),
            Err(UpcastError::Unregistered(9))
        );
    }

    #[test]
    fn redacted_data_passes_through() {
        let schemas = vec![
            doc(1, json!({})),
            doc(2, json!({"x-ironflow-upcast": {"set": {"a": 1}}})),
        ];
        let redacted = json!({"$redacted": true, "sha256": "ab"});
        let (data, steps) = upcast(&schemas, 1, 2, &redacted).expect("upcasts");
        assert_eq!(data, redacted);
        assert_eq!(steps.len(), 1);
    }
}
