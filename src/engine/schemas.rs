//! Event schemas: registration (compiled before it is stored), reads, revisions, upcasting,
//! the enforcement report, and enforcement itself on every emit and append (through a short-lived
//! per-name cache of compiled schemas, so the hot path reads the database once per name per
//! [`CACHE_TTL`] at most).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::domain::event_schema::{
    self, Enforcement, SchemaDoc, UpcastStep, asserts_anything, check, effective_mode, governing,
    parse_schema, schema_hash,
};
use crate::domain::lifecycle::control::Actor;
use crate::domain::pattern::validate_event_name;
use crate::domain::time::Ts;
use crate::ids::EnvId;
use crate::store::events::SchemaStamp;
use crate::store::schemas::{NewSchema, SchemaRecord, SchemaRevision, SchemaTraffic};

use super::{Engine, EngineError, page_size};

/// How long a node trusts its compiled copy of a name's schemas. A change made on this node
/// applies at once; one made on another node applies here within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Names cached at most (the cache starts over beyond it).
const CACHE_NAMES: usize = 10_000;
/// The largest schema document accepted.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Events sampled per name by `CheckEnforcement`.
const TRAFFIC_SCAN_CAP: i64 = 10_000;
/// Schemas reported per `CheckEnforcement` call at most (`total_schemas` says how many match).
const REPORT_CAP: usize = 100;

/// An event name's registered schemas and each one compiled, side by side (`validators[i]`
/// is `docs[i]` compiled, or why it does not compile).
#[derive(Default)]
pub(crate) struct NameSchemas {
    docs: Vec<SchemaDoc>,
    validators: Vec<Result<Arc<jsonschema::Validator>, String>>,
}

impl NameSchemas {
    fn from_records(records: &[SchemaRecord]) -> Self {
        let (docs, validators) = records.iter().map(compile_record).unzip();
        Self { docs, validators }
    }

    /// The name's enforcement mode: its latest schema's annotation, else the server's.
    fn mode(&self, server: Enforcement) -> Enforcement {
        let latest = self.docs.iter().max_by_key(|d| d.version);
        effective_mode(server, latest.map(|d| &d.document))
    }

    fn validator(&self, version: i32) -> Option<&Result<Arc<jsonschema::Validator>, String>> {
        let i = self.docs.iter().position(|d| d.version == version)?;
        self.validators.get(i)
    }
}

type CacheKey = (EnvId, String);
/// A name's compiled schemas and when they were read.
type CacheEntry = (Instant, Arc<NameSchemas>);

#[derive(Default)]
pub(crate) struct SchemaCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl SchemaCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<NameSchemas>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, s)| s.clone())
    }

    fn put(&self, key: CacheKey, schemas: Arc<NameSchemas>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_NAMES {
                entries.clear();
            }
            entries.insert(key, (Instant::now(), schemas));
        }
    }

    fn forget(&self, key: &CacheKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

/// A stored schema parsed and compiled (or why it does not compile).
fn compile_record(
    record: &SchemaRecord,
) -> (SchemaDoc, Result<Arc<jsonschema::Validator>, String>) {
    let document: Value = serde_json::from_str(&record.schema_json).unwrap_or(Value::Null);
    let validator = event_schema::compile(&document).map(Arc::new);
    let doc = SchemaDoc {
        version: record.version,
        document,
        hash: record.hash.clone(),
    };
    (doc, validator)
}

/// A schema as `RegisterSchema` carries it.
#[derive(Debug, Clone)]
pub struct RegisterSchema {
    pub event_name: String,
    pub version: i32,
    pub schema_json: String,
    pub description: String,
    pub change_reason: String,
}

/// One schema in the enforcement report.
#[derive(Debug, Clone)]
pub struct SchemaCheck {
    pub event_name: String,
    pub version: i32,
    pub schema_hash: String,
    pub asserts: bool,
    pub compile_error: Option<String>,
    pub traffic: Vec<SchemaTraffic>,
    pub traffic_truncated: bool,
}

#[derive(Debug, Clone)]
pub struct EnforcementReport {
    pub mode: Enforcement,
    pub schemas: Vec<SchemaCheck>,
    pub window_hours: i32,
    pub total_schemas: i64,
}

#[derive(Debug, Clone)]
pub struct SchemaHistoryPage {
    pub entries: Vec<SchemaRevision>,
    pub has_more: bool,
}

fn schema_version(version: i32, field: &str) -> Result<i32, EngineError> {
    match version {
        0 => Ok(1),
        v if v > 0 => Ok(v),
        v => Err(EngineError::InvalidArgument(format!(
            "{field} {v}: schema versions are positive (0 means 1)"
        ))),
    }
}

fn event_name(name: &str) -> Result<(), EngineError> {
    validate_event_name(name).map_err(|e| EngineError::InvalidArgument(format!("event_name: {e}")))
}

impl Engine {
    /// An event name's schemas, compiled (cached for [`CACHE_TTL`]).
    async fn compiled_schemas(
        &self,
        env: &EnvId,
        name: &str,
    ) -> Result<Arc<NameSchemas>, EngineError> {
        let key = (env.clone(), name.to_owned());
        if let Some(hit) = self.inner.schemas.get(&key) {
            return Ok(hit);
        }
        let records = self.store().schemas_of(env, name).await?;
        let schemas = Arc::new(NameSchemas::from_records(&records));
        self.inner.schemas.put(key, schemas.clone());
        Ok(schemas)
    }

    /// Applies enforcement to an event about to be stored: what to record on it and the schema
    /// version it carries (0 resolves to the latest registered), or the refusal under `reject`.
    pub(crate) async fn enforce_schema(
        &self,
        env: &EnvId,
        name: &str,
        version: i32,
        data: &Value,
    ) -> Result<(SchemaStamp, i32), EngineError> {
        // The server's own events (`ironflow/…`: invokes, cron ticks) have the shape it gives
        // them; a user's schema for such a name must not stop them.
        if name.starts_with("ironflow/") {
            return Ok((SchemaStamp::default(), version));
        }
        let schemas = self.compiled_schemas(env, name).await?;
        let mode = schemas.mode(self.options().schema_enforcement);
        if schemas.docs.is_empty() || mode == Enforcement::Off {
            return Ok((SchemaStamp::default(), version));
        }
        let Some(doc) = governing(&schemas.docs, version) else {
            let registered: Vec<String> =
                schemas.docs.iter().map(|d| d.version.to_string()).collect();
            let reason = format!(
                "event '{name}' version {version} has no registered schema (registered: {})",
                registered.join(", ")
            );
            return self.violation(mode, None, version, reason);
        };
        // A stored schema that does not compile is inert (CheckEnforcement reports it).
        let Some(Ok(validator)) = schemas.validator(doc.version) else {
            return Ok((SchemaStamp::default(), doc.version));
        };
        match check(validator, data) {
            Ok(()) => Ok((
                SchemaStamp {
                    hash: Some(doc.hash.clone()),
                    error: None,
                },
                doc.version,
            )),
            Err(v) => {
                let reason = format!(
                    "event '{name}' does not match its schema (version {}): {v}",
                    doc.version
                );
                self.violation(mode, Some(doc.hash.clone()), doc.version, reason)
            }
        }
    }

    fn violation(
        &self,
        mode: Enforcement,
        hash: Option<String>,
        version: i32,
        reason: String,
    ) -> Result<(SchemaStamp, i32), EngineError> {
        metrics::counter!("ironflow_event_schema_violations_total", "mode" => mode.as_str())
            .increment(1);
        match mode {
            Enforcement::Reject => Err(EngineError::InvalidArgument(reason)),
            _ => {
                tracing::warn!(%reason, "event stored despite its schema (enforcement: warn)");
                Ok((
                    SchemaStamp {
                        hash,
                        error: Some(reason),
                    },
                    version,
                ))
            }
        }
    }

    /// Registers (or replaces) a schema; `true` when it is new.
    pub async fn register_schema(
        &self,
        env: &EnvId,
        request: RegisterSchema,
        actor: &Actor,
    ) -> Result<bool, EngineError> {
        event_name(&request.event_name)?;
        let version = schema_version(request.version, "version")?;
        if request.schema_json.len() > MAX_SCHEMA_BYTES {
            return Err(EngineError::PayloadTooLarge {
                what: "schema_json",
                size: request.schema_json.len(),
                limit: MAX_SCHEMA_BYTES,
            });
        }
        parse_schema(&request.schema_json).map_err(EngineError::InvalidArgument)?;
        let schema = NewSchema {
            env_id: env.clone(),
            hash: schema_hash(&request.schema_json),
            event_name: request.event_name,
            version,
            schema_json: request.schema_json,
            description: request.description,
            change_reason: request.change_reason,
        };
        let created = self.store().register_schema(&schema, actor).await?;
        self.inner
            .schemas
            .forget(&(env.clone(), schema.event_name.clone()));
        Ok(created)
    }

    /// One version of a schema (0: the latest).
    pub async fn get_schema(
        &self,
        env: &EnvId,
        name: &str,
        version: i32,
    ) -> Result<SchemaRecord, EngineError> {
        event_name(name)?;
        let wanted = match version {
            0 => None,
            v => Some(schema_version(v, "version")?),
        };
        self.store()
            .get_schema(env, name, wanted)
            .await?
            .ok_or_else(|| match wanted {
                Some(v) => EngineError::not_found("schema", format!("{name} version {v}")),
                None => EngineError::not_found("schema", name),
            })
    }

    pub async fn list_schemas(
        &self,
        env: &EnvId,
        name: Option<&str>,
        limit: i32,
        offset: i32,
    ) -> Result<(Vec<SchemaRecord>, i64), EngineError> {
        if offset < 0 {
            return Err(EngineError::InvalidArgument(
                "offset must not be negative".into(),
            ));
        }
        let limit = page_size(i64::from(limit), 50, 500)?;
        Ok(self
            .store()
            .list_schemas(env, name, limit, i64::from(offset))
            .await?)
    }

    pub async fn delete_schema(
        &self,
        env: &EnvId,
        name: &str,
        version: i32,
        change_reason: &str,
        actor: &Actor,
    ) -> Result<(), EngineError> {
        event_name(name)?;
        if version <= 0 {
            return Err(EngineError::InvalidArgument(
                "version: name the version to delete (a positive number)".into(),
            ));
        }
        let found = self
            .store()
            .delete_schema(env, name, version, change_reason, actor)
            .await?;
        self.inner.schemas.forget(&(env.clone(), name.to_owned()));
        if found {
            Ok(())
        } else {
            Err(EngineError::not_found(
                "schema",
                format!("{name} version {version}"),
            ))
        }
    }

    pub async fn schema_history(
        &self,
        env: &EnvId,
        name: &str,
        version: i32,
        limit: i32,
        before_revision: i64,
    ) -> Result<SchemaHistoryPage, EngineError> {
        event_name(name)?;
        if version <= 0 {
            return Err(EngineError::InvalidArgument(
                "version is required (a positive number)".into(),
            ));
        }
        if before_revision < 0 {
            return Err(EngineError::InvalidArgument(
                "before_revision must not be negative".into(),
            ));
        }
        let limit = page_size(i64::from(limit), 50, 200)?;
        let mut entries = self
            .store()
            .schema_history(
                env,
                name,
                version,
                (before_revision > 0).then_some(before_revision),
                limit + 1,
            )
            .await?;
        let has_more = entries.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(SchemaHistoryPage { entries, has_more })
    }

    pub async fn schema_revision(
        &self,
        env: &EnvId,
        name: &str,
        version: i32,
        revision: i64,
    ) -> Result<SchemaRevision, EngineError> {
        event_name(name)?;
        self.store()
            .schema_revision(env, name, version, revision)
            .await?
            .ok_or_else(|| {
                EngineError::not_found(
                    "schema revision",
                    format!("{name} version {version} revision {revision}"),
                )
            })
    }

    /// Upcasts data from one registered version to a newer one (0 as `to`: the latest).
    pub async fn test_upcast(
        &self,
        env: &EnvId,
        name: &str,
        from: i32,
        to: i32,
        data: &Value,
    ) -> Result<(Value, Vec<UpcastStep>), EngineError> {
        event_name(name)?;
        let schemas = self.compiled_schemas(env, name).await?;
        let docs = &schemas.docs;
        if docs.is_empty() {
            return Err(EngineError::not_found("schema", name));
        }
        let from = schema_version(from, "from_version")?;
        let to = match to {
            0 => docs.iter().map(|d| d.version).max().unwrap_or(1),
            v => schema_version(v, "to_version")?,
        };
        event_schema::upcast(docs, from, to, data).map_err(|e| {
            EngineError::InvalidArgument(format!("cannot upcast '{name}' from {from} to {to}: {e}"))
        })
    }

    /// Data of an event upcast to `to` (used where a reader asks for a newer version).
    pub async fn upcast_event_data(
        &self,
        env: &EnvId,
        name: &str,
        from: i32,
        to: i32,
        data: &Value,
    ) -> Result<Value, EngineError> {
        if from >= to {
            return Ok(data.clone());
        }
        Ok(self.test_upcast(env, name, from, to, data).await?.0)
    }

    /// What enforcement does for each registered schema (or those of one name), with the
    /// traffic of the last `window_hours` (0: 24).
    pub async fn check_enforcement(
        &self,
        env: &EnvId,
        name: Option<&str>,
        window_hours: i32,
    ) -> Result<EnforcementReport, EngineError> {
        if let Some(n) = name {
            event_name(n)?;
        }
        if window_hours < 0 {
            return Err(EngineError::InvalidArgument(
                "traffic_window_hours must not be negative".into(),
            ));
        }
        let window_hours = if window_hours == 0 {
            24
        } else {
            window_hours.min(24 * 90)
        };
        let cap = i64::try_from(REPORT_CAP).unwrap_or(100);
        let (records, total) = self.store().list_schemas(env, name, cap, 0).await?;
        let since = Ts::now().minus(Duration::from_secs(
            u64::try_from(window_hours).unwrap_or(24) * 3600,
        ));
        let mut traffic: HashMap<String, (Vec<SchemaTraffic>, bool)> = HashMap::new();
        let mut schemas = Vec::with_capacity(records.len());
        for record in &records {
            if !traffic.contains_key(&record.event_name) {
                let sample = self
                    .store()
                    .schema_traffic(env, &record.event_name, since, TRAFFIC_SCAN_CAP)
                    .await?;
                traffic.insert(record.event_name.clone(), sample);
            }
            let (rows, truncated) = traffic.get(&record.event_name).cloned().unwrap_or_default();
            let (doc, validator) = compile_record(record);
            schemas.push(SchemaCheck {
                event_name: record.event_name.clone(),
                version: record.version,
                schema_hash: record.hash.clone(),
                asserts: validator.is_ok() && asserts_anything(&doc.document),
                compile_error: validator.err(),
                traffic: rows,
                traffic_truncated: truncated,
            });
        }
        // The mode a name is under: its latest schema's annotation, else the server's.
        let mode = match name {
            Some(n) => self
                .compiled_schemas(env, n)
                .await?
                .mode(self.options().schema_enforcement),
            None => self.options().schema_enforcement,
        };
        Ok(EnforcementReport {
            mode,
            schemas,
            window_hours,
            total_schemas: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_zero_means_one_and_negatives_are_refused() {
        assert_eq!(schema_version(0, "version").expect("0"), 1);
        assert_eq!(schema_version(4, "version").expect("4"), 4);
        assert!(schema_version(-1, "version").is_err());
    }
}
