//! The storage API: one trait per area (events, functions, runs, history, execution, KV,
//! config, secrets, messages, groups, push, tenancy, policies, audit), summed up by `Store`, implemented once by
//! [`db::SqlStore`] over the backend contract [`db::Db`] (Postgres or SQLite).
//!
//! The store knows tables and transactions, never HTTP. Every query lives in `sql/<backend>/`;
//! the Rust that binds parameters and maps rows is written once ([`sql`]) for both backends, so
//! the two cannot drift apart.

pub mod pg_layout;
pub mod postgres;
pub mod sqlite;
pub mod time;

mod apply;
pub mod audit;
pub mod config;
pub mod control;
pub mod db;
pub mod events;
pub mod execution;
pub mod flow;
pub mod functions;
pub mod groups;
pub mod history;
pub mod history_sql;
pub mod kv;
pub mod kv_nats;
pub mod messages;
pub mod observability;
pub mod policies;
pub mod projections;
pub mod push;
pub mod retention;
pub mod runs;
pub mod schedules;
pub mod schemas;
pub mod secrets;
pub(crate) mod sql;
pub mod sql_projections;
pub mod streams;
pub mod tenancy;
pub mod webhooks;
mod writes;

pub use tenancy::TenancyStore;

use std::sync::Arc;

use async_trait::async_trait;

use crate::ids::RunId;

/// Store failures. `Unavailable` and `Internal` carry context for logs only; the API shows a
/// generic message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused service for now (a restart, a failover, a full
    /// pool): the same request can succeed later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a deadlock or a serialization conflict and was rolled back whole:
    /// running it again is safe.
    #[error("transaction rolled back by a concurrent one: {0}")]
    Contention(String),
    #[error("conflicting concurrent write: {0}")]
    Conflict(String),
    /// A value the database cannot store (the client's input).
    #[error("value refused by the database: {0}")]
    Invalid(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Internal(String),
    /// The database is not set up the way serving needs (a missing schema or right, a newer
    /// schema, migrations that cannot run here): the operator's to fix, said in full at start.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// Whether the same request can succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Contention(_))
    }
}

/// How a database error code reads: Postgres SQLSTATEs and SQLite (extended) result codes.
fn classify(code: &str) -> Option<fn(String) -> StoreError> {
    Some(match code {
        // deadlock_detected, serialization_failure: rolled back, safe to run again.
        "40P01" | "40001" => StoreError::Contention,
        // Connection exceptions, admin / crash shutdown, cannot connect now, too many
        // connections, lock timeout, statement timeout, a read-only standby after failover.
        c if c.starts_with("08") => StoreError::Unavailable,
        "57P01" | "57P02" | "57P03" | "53300" | "53000" | "55P03" | "57014" | "25006" => {
            StoreError::Unavailable
        }
        // untranslatable_character (U+0000 in jsonb), character_not_in_repertoire (0x00 in text).
        "22P05" | "22021" => StoreError::Invalid,
        // insufficient_privilege: the server's role lacks a right (an operator's to grant).
        "42501" => StoreError::Setup,
        // SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
        "5" | "6" | "261" | "517" | "262" => StoreError::Unavailable,
        _ => return None,
    })
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(db.to_string()),
            sqlx::Error::Database(db) => match db.code().as_deref().and_then(classify) {
                Some(variant) => variant(err.to_string()),
                None => Self::Internal(err.to_string()),
            },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                Self::Corrupt(err.to_string())
            }
            _ => Self::Internal(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Internal(format!("migration failed: {err}"))
    }
}

/// Refuses a database migrated by a newer binary: migrations are forward-only, and an older
/// binary against a newer schema would read and write rows it does not understand.
pub(crate) fn check_schema_version(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        Some(found) if found > known => Err(StoreError::Setup(format!(
            "this database's schema is at version {found}, newer than this binary (ironflow {}) \
             knows (up to {known}): run the release that migrated it, or a newer one \
             (migrations are forward-only)",
            env!("CARGO_PKG_VERSION")
        ))),
        _ => Ok(()),
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The one storage API. Every method that changes state appends to the history in the same
/// transaction.
#[async_trait]
pub trait Store:
    tenancy::TenancyStore
    + policies::PolicyStore
    + audit::AuditStore
    + functions::FunctionStore
    + runs::RunStore
    + history::HistoryStore
    + messages::MessageStore
    + kv::KvStore
    + config::ConfigStore
    + secrets::SecretStore
    + groups::GroupStore
    + push::PushStore
    + events::EventStore
    + execution::ExecutionStore
    + control::RunControlStore
    + streams::StreamStore
    + schemas::SchemaStore
    + projections::ProjectionStore
    + sql_projections::SqlProjectionStore
    + history_sql::HistoryQueryStore
    + retention::RetentionStore
    + schedules::ScheduleStore
    + webhooks::WebhookStore
    + observability::ObservabilityStore
    + flow::FlowStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Applies pending migrations and (re)creates the documented views in `sql/<backend>/views.sql`.
    async fn migrate(&self) -> Result<(), StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Refreshes the planner's statistics of tables that changed a lot since they were last
    /// analyzed (see `sql/<backend>/refresh_statistics.sql`); cheap when none did.
    async fn refresh_statistics(&self) -> Result<(), StoreError>;

    /// Forwards wakeups from other nodes (Postgres LISTEN) until shutdown; returns at once on
    /// SQLite, where every writer is in this process.
    async fn listen(&self, wakeups: WakeupSink, shutdown: tokio_util::sync::CancellationToken);

    /// Closes the pools; in-flight queries finish first.
    async fn close(&self);
}

pub type SharedStore = Arc<dyn Store>;

#[async_trait]
impl<D: db::Db> Store for db::SqlStore<D> {
    fn backend(&self) -> Backend {
        self.db.backend()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        use sql::Conn as _;
        self.db
            .reader()
            .await?
            .scalar::<i32>(sql::sql!("ping"), sql::args![])
            .await?;
        Ok(())
    }

    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        use sql::Conn as _;
        self.db
            .writer()
            .await?
            .execute(sql::sql!("refresh_statistics"), sql::args![])
            .await?;
        Ok(())
    }

    async fn listen(&self, wakeups: WakeupSink, shutdown: tokio_util::sync::CancellationToken) {
        self.db.listen(wakeups, shutdown).await;
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// The one NOTIFY payload of a transaction: `<node>|<token>;<token>…` with `w` (work ready),
/// `r:<run>` (a run ended), `t:<seq>` / `e:<seq>` (a topic message / an event stored). Over
/// Postgres' 8000-byte limit the run tokens collapse to `R` ("re-check your runs").
pub fn notify_payload(node: &str, effects: &crate::domain::lifecycle::Effects) -> Option<String> {
    let mut tokens: Vec<String> = Vec::new();
    if effects.work_ready {
        tokens.push("w".into());
    }
    for (kind, seq) in &effects.stored {
        tokens.push(match kind {
            StoredKind::Topic => format!("t:{seq}"),
            StoredKind::Event => format!("e:{seq}"),
        });
    }
    let runs: Vec<String> = effects
        .finished_runs
        .iter()
        .map(|r| format!("r:{r}"))
        .collect();
    let runs_len: usize = runs.iter().map(|r| r.len() + 1).sum();
    if node.len() + runs_len + tokens.iter().map(|t| t.len() + 1).sum::<usize>() > 7000 {
        tokens.push("R".into());
    } else {
        tokens.extend(runs);
    }
    (!tokens.is_empty()).then(|| format!("{node}|{}", tokens.join(";")))
}

/// The NOTIFY payload of a KV write: watchers on other nodes read their buckets again.
pub fn kv_notify_payload(node: &str) -> String {
    format!("{node}|k")
}

/// The NOTIFY payload of a projection cursor move: catch-up waiters on other nodes look again.
pub fn projection_notify_payload(node: &str) -> String {
    format!("{node}|p")
}

/// Parses a payload from another node; our own payloads (already delivered locally) → empty.
pub fn parse_notify_payload(payload: &str, own_node: &str) -> Vec<Wakeup> {
    let Some((node, body)) = payload.split_once('|') else {
        return vec![];
    };
    if node == own_node {
        return vec![];
    }
    body.split(';')
        .filter_map(|token| match token.split_once(':') {
            None if token == "w" => Some(Wakeup::WorkReady),
            None if token == "R" => Some(Wakeup::RunsChanged),
            None if token == "k" => Some(Wakeup::KvChanged),
            None if token == "p" => Some(Wakeup::ProjectionsChanged),
            Some(("r", run)) => Some(Wakeup::RunFinished(RunId::from_stored(run.to_owned()))),
            Some(("t", seq)) => seq.parse().ok().map(|seq| Wakeup::Stored {
                kind: StoredKind::Topic,
                seq,
            }),
            Some(("e", seq)) => seq.parse().ok().map(|seq| Wakeup::Stored {
                kind: StoredKind::Event,
                seq,
            }),
            _ => None,
        })
        .collect()
}

/// A wakeup from another node: new work is claimable, a run ended, or a message was stored.
#[derive(Debug, Clone)]
pub enum Wakeup {
    WorkReady,
    RunFinished(RunId),
    /// Too many runs ended to list: every sync waiter re-checks its runs.
    RunsChanged,
    /// A KV value was written: watchers read their buckets after their last revision.
    KvChanged,
    /// A projection's cursor moved: catch-up waiters look again.
    ProjectionsChanged,
    /// A topic message (`messages.seq`) or an event (`events.seq`) to fan out live.
    Stored {
        kind: StoredKind,
        seq: i64,
    },
}

pub use crate::domain::lifecycle::StoredKind;

/// Where [`Store::listen`] delivers wakeups.
pub type WakeupSink = Arc<dyn Fn(Wakeup) + Send + Sync>;

/// Which database to open and how (the `--db*` flags).
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `postgres://…` / `postgresql://…`, or `sqlite://path` / a bare file path.
    pub url: String,
    /// Postgres only; SQLite ignores it.
    pub postgres: postgres::PgOptions,
}

impl DbOptions {
    /// A URL with the default settings.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            postgres: postgres::PgOptions::default(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// Opens the store a URL names, with default settings.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    open_with(&DbOptions::url(url)).await
}

/// Opens the store the options name.
pub async fn open_with(options: &DbOptions) -> Result<SharedStore, StoreError> {
    if options.is_postgres() {
        Ok(Arc::new(
            postgres::PgStore::connect(&options.url, &options.postgres).await?,
        ))
    } else {
        let url = options.url.as_str();
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.strip_prefix("sqlite:").unwrap_or(path);
        Ok(Arc::new(
            sqlite::SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_payload_per_transaction_round_trips() {
        let effects = crate::domain::lifecycle::Effects {
            work_ready: true,
            finished_runs: vec![RunId::from_stored("r1".into())],
            stored: vec![(StoredKind::Event, 7)],
            scheduled: None,
            ended_runs: Vec::new(),
        };
        let payload = notify_payload("n1", &effects).expect("something to say");
        assert_eq!(payload, "n1|w;e:7;r:r1");
        assert!(
            parse_notify_payload(&payload, "n1").is_empty(),
            "our own commits are already delivered"
        );
        let wakeups = parse_notify_payload(&payload, "n2");
        assert!(
            matches!(wakeups.as_slice(), [Wakeup::WorkReady, Wakeup::Stored { kind: StoredKind::Event, seq: 7 }, Wakeup::RunFinished(r)] if r.as_str() == "r1")
        );
        assert_eq!(
            notify_payload("n1", &crate::domain::lifecycle::Effects::default()),
            None
        );
        let many = crate::domain::lifecycle::Effects {
            finished_runs: (0..1000)
                .map(|i| RunId::from_stored(format!("run-{i:04}")))
                .collect(),
            ..Default::default()
        };
        let big = notify_payload("n1", &many).expect("payload");
        assert!(
            big.len() < 8000 && big.ends_with('R'),
            "collapses to a re-check under the size limit"
        );
    }
}
