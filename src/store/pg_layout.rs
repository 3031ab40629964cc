//! Where Ironflow's objects live on Postgres: the schema name, the move out of `public` that
//! earlier releases used, and what a serving role must be allowed. Pure decisions; the
//! connection work is in [`super::postgres`].

use std::fmt;

/// The schema every table, view, function and sequence lives in (`--db-schema`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSchema(String);

impl DbSchema {
    /// Lower-case letters, digits and `_`, not starting with a digit, at most 63 bytes, and
    /// not one of Postgres's own: it is spliced into `search_path` and DDL unquoted-safe.
    pub fn parse(name: &str) -> Result<Self, String> {
        let name = name.trim();
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if name.is_empty()
            || name.len() > 63
            || !valid_chars
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "schema name {name:?}: use 1–63 lower-case letters, digits and _, not starting \
                 with a digit"
            ));
        }
        if name.starts_with("pg_") || name == "information_schema" {
            return Err(format!("schema name {name:?} is reserved by Postgres"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `public`, where releases before the schema option kept everything.
    pub fn is_public(&self) -> bool {
        self.0 == "public"
    }
}

impl Default for DbSchema {
    fn default() -> Self {
        Self("ironflow".to_owned())
    }
}

impl fmt::Display for DbSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tables migrations 1–12 created in `public` before the schema option existed (later
/// migrations only ever create theirs in the configured schema).
pub const LEGACY_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "orgs",
    "projects",
    "environments",
    "api_keys",
    "functions",
    "function_versions",
    "events",
    "runs",
    "steps",
    "history",
    "workers",
    "jobs",
    "waits",
    "kv_buckets",
    "kv_entries",
    "configs",
    "secrets",
    "messages",
    "consumer_groups",
    "group_deliveries",
    "group_members",
    "circuit_breakers",
    "streams",
    "stream_snapshots",
    "event_schemas",
    "event_schema_revisions",
    "projections",
    "projection_states",
    "projection_revisions",
    "users",
    "user_sessions",
    "roles",
    "policy_sets",
    "audit_settings",
    "audit_log",
];

/// Their functions (trigger functions and the stream lock).
pub const LEGACY_FUNCTIONS: &[&str] = &[
    "history_is_append_only",
    "projection_revisions_append_only",
    "ironflow_lock_streams",
    "policy_sets_append_only",
    "audit_log_append_only",
];

/// What `public` holds, as far as the move cares.
#[derive(Debug, Clone, Default)]
pub struct PublicFacts {
    /// Whether the target schema already has its own bookkeeping table (then it is in use and
    /// nothing moves).
    pub target_migrated: bool,
    /// The checksum of migration 1 in `public._sqlx_migrations`, when that table exists.
    pub public_first_checksum: Option<Vec<u8>>,
    /// Which of [`LEGACY_TABLES`] and the documented views ([`crate::domain::history_sql::VIEWS`])
    /// exist in `public`.
    pub relations: Vec<String>,
    /// Which of [`LEGACY_FUNCTIONS`] exist in `public`, with their identity arguments.
    pub functions: Vec<(String, String)>,
}

/// The statements that move an earlier release's objects from `public` into `schema`, in one
/// transaction; empty when there is nothing of ours there. `ours` is our migration 1's
/// checksum: a `public._sqlx_migrations` of another sqlx application is left alone.
pub fn legacy_move(schema: &DbSchema, facts: &PublicFacts, ours: &[u8]) -> Vec<String> {
    if schema.is_public()
        || facts.target_migrated
        || facts.public_first_checksum.as_deref() != Some(ours)
    {
        return Vec::new();
    }
    let mut statements = Vec::new();
    for table in LEGACY_TABLES {
        if facts.relations.iter().any(|r| r == table) {
            statements.push(format!("ALTER TABLE public.{table} SET SCHEMA {schema}"));
        }
    }
    for view in crate::domain::history_sql::VIEWS {
        if facts.relations.iter().any(|r| r == view) {
            statements.push(format!("ALTER VIEW public.{view} SET SCHEMA {schema}"));
        }
    }
    for (function, args) in &facts.functions {
        if LEGACY_FUNCTIONS.contains(&function.as_str()) {
            statements.push(format!(
                "ALTER FUNCTION public.{function}({args}) SET SCHEMA {schema}"
            ));
        }
    }
    statements
}

/// The rights `serve` needs on one table, as `has_table_privilege` names them.
pub const TABLE_RIGHTS: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];

/// One right a serving role lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRight {
    pub right: String,
    pub object: String,
}

/// The start-up error for missing rights: names the first few and the grants that fix them.
pub fn missing_rights_message(role: &str, schema: &DbSchema, missing: &[MissingRight]) -> String {
    let named: Vec<String> = missing
        .iter()
        .take(5)
        .map(|m| format!("{} on {}", m.right, m.object))
        .collect();
    let more = missing.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    format!(
        "role {role} lacks {}{more}: as the schema's owner run \
         GRANT USAGE ON SCHEMA {schema} TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}; \
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role} \
         (README: \"Running on Postgres\")",
        named.join(", ")
    )
}

/// The statement that opens every transaction behind a transaction-mode pooler: the session
/// settings a direct connection gets at start-up, made transaction-local.
pub fn pooled_begin(schema: &DbSchema, statement_timeout_ms: Option<u64>) -> String {
    let mut begin = format!("BEGIN; SET LOCAL search_path TO {schema}");
    if let Some(ms) = statement_timeout_ms {
        begin.push_str(&format!("; SET LOCAL statement_timeout = {ms}"));
    }
    begin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert_eq!(DbSchema::default().as_str(), "ironflow");
        assert_eq!(
            DbSchema::parse(" app_history2 ").expect("valid").as_str(),
            "app_history2"
        );
        assert!(DbSchema::parse("public").expect("valid").is_public());
        for bad in [
            "",
            "Ironflow",
            "a-b",
            "a b",
            "1abc",
            "x\"; DROP",
            "pg_temp",
            "information_schema",
        ] {
            assert!(DbSchema::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(DbSchema::parse(&"a".repeat(64)).is_err());
    }

    fn facts(checksum: &[u8], relations: &[&str]) -> PublicFacts {
        PublicFacts {
            target_migrated: false,
            public_first_checksum: Some(checksum.to_vec()),
            relations: relations.iter().map(|r| (*r).to_owned()).collect(),
            functions: vec![("ironflow_lock_streams".into(), "keys bigint[]".into())],
        }
    }

    #[test]
    fn an_earlier_release_in_public_moves_whole() {
        let schema = DbSchema::default();
        let moves = legacy_move(
            &schema,
            &facts(b"ours", &["events", "ironflow_runs", "_sqlx_migrations"]),
            b"ours",
        );
        assert_eq!(
            moves,
            [
                "ALTER TABLE public._sqlx_migrations SET SCHEMA ironflow",
                "ALTER TABLE public.events SET SCHEMA ironflow",
                "ALTER VIEW public.ironflow_runs SET SCHEMA ironflow",
                "ALTER FUNCTION public.ironflow_lock_streams(keys bigint[]) SET SCHEMA ironflow",
            ]
        );
    }

    #[test]
    fn nothing_moves_that_is_not_ours_or_already_moved() {
        let schema = DbSchema::default();
        // Another sqlx application's bookkeeping in public, next to its own `events`.
        assert!(
            legacy_move(
                &schema,
                &facts(b"theirs", &["events", "_sqlx_migrations"]),
                b"ours"
            )
            .is_empty()
        );
        // No bookkeeping in public at all: an application's `events` and `runs`.
        let mut none = facts(b"ours", &["events", "runs"]);
        none.public_first_checksum = None;
        assert!(legacy_move(&schema, &none, b"ours").is_empty());
        // The target schema is already in use.
        let mut migrated = facts(b"ours", &["events"]);
        migrated.target_migrated = true;
        assert!(legacy_move(&schema, &migrated, b"ours").is_empty());
        // Configured to stay in public.
        let public = DbSchema::parse("public").expect("valid");
        assert!(legacy_move(&public, &facts(b"ours", &["events"]), b"ours").is_empty());
    }

    #[test]
    fn missing_rights_name_the_right_and_the_fix() {
        let missing: Vec<MissingRight> = (0..7)
            .map(|i| MissingRight {
                right: "INSERT".into(),
                object: format!("ironflow.t{i}"),
            })
            .collect();
        let message = missing_rights_message("app", &DbSchema::default(), &missing);
        assert!(message.starts_with("role app lacks INSERT on ironflow.t0, INSERT on ironflow.t1"));
        assert!(message.contains("(and 2 more)"));
        assert!(message.contains(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ironflow TO app"
        ));
    }

    #[test]
    fn pooled_transactions_carry_the_session_settings() {
        let schema = DbSchema::parse("hist").expect("valid");
        assert_eq!(
            pooled_begin(&schema, None),
            "BEGIN; SET LOCAL search_path TO hist"
        );
        assert_eq!(
            pooled_begin(&schema, Some(5000)),
            "BEGIN; SET LOCAL search_path TO hist; SET LOCAL statement_timeout = 5000"
        );
    }
}
