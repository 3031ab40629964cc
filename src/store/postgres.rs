//! Postgres backend: the production store (shared by every node), in a schema of its own,
//! directly or behind a transaction-mode pooler.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use tokio_util::sync::CancellationToken;

use super::db::{Db, SqlStore};
use super::pg_layout::{self, DbSchema, MissingRight, PublicFacts};
use super::{Backend, StoreError, WakeupSink};

/// How to reach Postgres beyond its URL (the `--db-*` flags).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Where every table, view and function lives (`--db-schema`).
    pub schema: DbSchema,
    /// A direct (session) connection for LISTEN and for migrations, when the main URL goes
    /// through a transaction-mode pooler.
    pub listen_url: Option<String>,
    /// The main URL is a transaction-mode pooler (PgBouncer `pool_mode = transaction`): no
    /// named prepared statements, no session settings, every statement in a transaction.
    pub transaction_pooler: bool,
    /// Connections in this node's pool.
    pub pool_size: u32,
    /// Longest one statement may run (Postgres `statement_timeout`); none by default.
    pub statement_timeout: Option<Duration>,
    /// What `pg_stat_activity` shows for this node's connections.
    pub application_name: String,
    /// CA certificate(s) to verify the server with (`sslmode=verify-ca` / `verify-full`); the
    /// URL's `sslrootcert` does the same.
    pub ca_file: Option<PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: DbSchema::default(),
            listen_url: None,
            transaction_pooler: false,
            pool_size: 32,
            statement_timeout: None,
            application_name: "ironflow".to_owned(),
            ca_file: None,
        }
    }
}

/// Set when this process's store sits behind a transaction-mode pooler: the statement that
/// opens each of its transactions ([`pg_layout::pooled_begin`]). Process-wide because a sqlx
/// connection carries no data of ours; one pooler configuration per process.
static POOLED_BEGIN: OnceLock<String> = OnceLock::new();

/// The statement that opens a transaction behind a transaction-mode pooler, if there is one.
pub(crate) fn pooled_begin() -> Option<&'static str> {
    POOLED_BEGIN.get().map(String::as_str)
}

/// Opens a transaction on `conn` with the pooler's session settings where there is one.
pub(crate) async fn begin_on(
    conn: &mut sqlx::PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    match pooled_begin() {
        Some(begin) => sqlx::Connection::begin_with(conn, sqlx::AssertSqlSafe(begin)).await,
        None => sqlx::Connection::begin(conn).await,
    }
}

/// Postgres: one pool for reads and writes, and a LISTEN connection.
#[derive(Clone)]
pub struct PgDb {
    pool: PgPool,
    /// A direct connection's options for LISTEN and migrations (`None`: behind a pooler with
    /// no `listen_url`).
    direct: Option<PgConnectOptions>,
    options: std::sync::Arc<PgOptions>,
    /// Tags this process's NOTIFY payloads so it does not relay its own messages twice.
    node_id: String,
}

/// The connect options for `url`: TLS, name, and — on a direct connection — the session's
/// schema and statement timeout as start-up parameters.
fn connect_options(
    url: &str,
    options: &PgOptions,
    direct: bool,
) -> Result<PgConnectOptions, StoreError> {
    let mut connect = url
        .parse::<PgConnectOptions>()
        .map_err(|e| StoreError::Setup(format!("bad Postgres URL: {e}")))?
        .application_name(&options.application_name)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    if let Some(ca) = &options.ca_file {
        connect = connect.ssl_root_cert(ca);
    }
    if plaintext_by_default(url, connect.get_host()) {
        connect = connect.ssl_mode(sqlx::postgres::PgSslMode::Disable);
    }
    if direct {
        let mut session = vec![("search_path", options.schema.to_string())];
        if let Some(timeout) = options.statement_timeout {
            session.push(("statement_timeout", timeout.as_millis().to_string()));
        }
        connect = connect.options(session);
    } else {
        // PgBouncer in transaction mode hands each transaction to any server connection: a
        // named statement prepared on one is missing on the next. It also refuses start-up
        // parameters it does not track (1.18: `extra_float_digits`; we read floats in binary).
        connect = connect.statement_cache_capacity(0).extra_float_digits(None);
    }
    Ok(connect)
}

/// Without an `sslmode` (in the URL or `PGSSLMODE`), a server on this machine is reached without
/// TLS: there is no network to protect, and encrypting loopback traffic costs about half the
/// throughput on a small machine. Anywhere else the default is libpq's `prefer`.
fn plaintext_by_default(url: &str, host: &str) -> bool {
    let asked = url.contains("sslmode=") || std::env::var_os("PGSSLMODE").is_some();
    let local =
        matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") || host.starts_with('/');
    !asked && local
}

impl PgDb {
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let pooled = options.transaction_pooler;
        if pooled {
            let begin = pg_layout::pooled_begin(
                &options.schema,
                options.statement_timeout.map(|t| t.as_millis() as u64),
            );
            if POOLED_BEGIN.get_or_init(|| begin.clone()) != &begin {
                return Err(StoreError::Setup(
                    "one process serves one transaction-pooler configuration".into(),
                ));
            }
        }
        let main = connect_options(url, options, !pooled)?;
        let direct = match (&options.listen_url, pooled) {
            (Some(listen), _) => Some(connect_options(listen, options, true)?),
            (None, false) => Some(main.clone()),
            (None, true) => None,
        };
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(main)
            .await?;
        Ok(Self {
            pool,
            direct,
            options: std::sync::Arc::new(options.clone()),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// LISTENs on `ironflow` (one NOTIFY per committing transaction); reconnects when lost.
    /// Behind a pooler with no direct connection, looks for other nodes' work once a second.
    async fn listen_impl(&self, wakeups: WakeupSink, shutdown: CancellationToken) {
        let Some(direct) = self.direct.clone() else {
            tracing::warn!(
                "behind a transaction-mode pooler without --db-listen-url: other nodes' work is \
                 noticed within a second instead of at once, and their live messages are not \
                 relayed (give a direct URL for LISTEN, or --nats-url)"
            );
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        wakeups(super::Wakeup::WorkReady);
                        wakeups(super::Wakeup::KvChanged);
                        wakeups(super::Wakeup::ProjectionsChanged);
                    }
                }
            }
        };
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_lazy_with(direct);
        while !shutdown.is_cancelled() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&listen_pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen("ironflow").await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                continue;
            }
            // Anything may have happened while we were not listening.
            wakeups(super::Wakeup::WorkReady);
            wakeups(super::Wakeup::KvChanged);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(n) => {
                            for w in super::parse_notify_payload(n.payload(), &self.node_id) {
                                wakeups(w);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
        listen_pool.close().await;
    }

    /// What the schema holds now: read in one transaction (a pooler's statements need one).
    async fn layout_facts(&self, views_fingerprint: &str) -> Result<LayoutFacts, StoreError> {
        let schema = self.options.schema.as_str();
        let mut tx = self.begin_tx().await?;
        let row: LayoutRow = sqlx::query_as(
            "SELECT current_user::text AS role, \
                    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS schema_exists, \
                    to_regclass(quote_ident($1) || '._sqlx_migrations') IS NOT NULL AS migrated, \
                    COALESCE(obj_description(to_regclass(quote_ident($1) || '.ironflow_events'), \
                        'pg_class'), '') = $2 AS views_current",
        )
        .persistent(false)
        .bind(schema)
        .bind(views_fingerprint)
        .fetch_one(&mut *tx)
        .await?;
        let applied: Vec<i64> = if row.migrated {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version"
            )))
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        let mut public = PublicFacts {
            target_migrated: row.migrated,
            ..PublicFacts::default()
        };
        if !row.migrated && !self.options.schema.is_public() {
            let has_bookkeeping: bool =
                sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await?;
            if has_bookkeeping {
                public.public_first_checksum = sqlx::query_scalar(
                    "SELECT checksum FROM public._sqlx_migrations WHERE version = 1",
                )
                .persistent(false)
                .fetch_optional(&mut *tx)
                .await?;
                let names: Vec<&str> = pg_layout::LEGACY_TABLES
                    .iter()
                    .chain(crate::domain::history_sql::VIEWS)
                    .copied()
                    .collect();
                public.relations = sqlx::query_scalar(
                    "SELECT c.relname::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' AND c.relname = ANY($1) AND c.relkind IN ('r', 'p', 'v')",
                )
                .persistent(false)
                .bind(&names)
                .fetch_all(&mut *tx)
                .await?;
                let functions: Vec<PublicFunction> = sqlx::query_as(
                    "SELECT p.proname::text AS name, pg_get_function_identity_arguments(p.oid) AS args \
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = 'public' AND p.proname = ANY($1)",
                )
                .persistent(false)
                .bind(pg_layout::LEGACY_FUNCTIONS)
                .fetch_all(&mut *tx)
                .await?;
                public.functions = functions.into_iter().map(|f| (f.name, f.args)).collect();
            }
        }
        tx.rollback().await?;
        Ok(LayoutFacts {
            role: row.role,
            schema_exists: row.schema_exists,
            views_current: row.views_current,
            applied,
            public,
        })
    }

    /// The rights a serving role lacks in the schema (none for its owner).
    async fn missing_rights(&self) -> Result<Vec<MissingRight>, StoreError> {
        let mut tx = self.begin_tx().await?;
        let rows: Vec<MissingRightRow> = sqlx::query_as(
            "SELECT 'USAGE' AS privilege, 'schema ' || quote_ident($1) AS object \
             WHERE NOT has_schema_privilege($1, 'USAGE') \
             UNION ALL \
             SELECT p.privilege, quote_ident($1) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN unnest($2::text[]) AS p(privilege) \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND NOT has_table_privilege(c.oid, p.privilege) \
             UNION ALL \
             SELECT 'USAGE', quote_ident($1) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 \
               AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(c.oid, 'USAGE') ELSE false END \
             UNION ALL \
             SELECT 'EXECUTE', quote_ident($1) || '.' || quote_ident(p.proname) || '()' \
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.prosecdef AND NOT has_function_privilege(p.oid, 'EXECUTE') \
             ORDER BY 2, 1",
        )
        .persistent(false)
        .bind(self.options.schema.as_str())
        .bind(pg_layout::TABLE_RIGHTS)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(rows
            .into_iter()
            .map(|r| MissingRight {
                right: r.privilege,
                object: r.object,
            })
            .collect())
    }

    /// A transaction on the main pool, with the pooler's settings where there is one.
    async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(match pooled_begin() {
            Some(begin) => self.pool.begin_with(sqlx::AssertSqlSafe(begin)).await?,
            None => self.pool.begin().await?,
        })
    }

    /// Brings the schema to this binary's version: creates it, moves an earlier release's
    /// objects out of `public`, applies pending migrations and the views — each only when
    /// needed, so a role with DML rights alone starts against an up-to-date schema — then
    /// checks that this role may do what serving needs.
    async fn run_migrations(&self) -> Result<(), StoreError> {
        let migrator = sqlx::migrate!("./migrations/postgres");
        let facts = self.layout_facts(&views_fingerprint()).await?;
        super::check_schema_version(facts.applied.last().copied(), &migrator)?;
        let schema = &self.options.schema;
        let ours = migrator
            .iter()
            .find(|m| m.version == 1)
            .map(|m| m.checksum.to_vec())
            .unwrap_or_default();
        let changes = LayoutChanges {
            create_schema: !facts.schema_exists,
            moves: pg_layout::legacy_move(schema, &facts.public, &ours),
            pending: migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .filter(|m| !facts.applied.contains(&m.version))
                .count(),
            views_stale: !facts.views_current,
        };
        if changes.any() {
            let Some(direct) = self.direct.clone() else {
                return Err(StoreError::Setup(format!(
                    "schema {schema} needs migrating ({} migrations pending) and DDL \
                     cannot run through a transaction-mode pooler: run `ironflow migrate` with \
                     a direct URL, or give --db-listen-url",
                    changes.pending
                )));
            };
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(direct)
                .await?;
            let result = self
                .apply_layout(&admin, &facts.role, &changes, &migrator)
                .await;
            admin.close().await;
            result?;
        }
        let missing = self.missing_rights().await?;
        if !missing.is_empty() {
            return Err(StoreError::Setup(pg_layout::missing_rights_message(
                &facts.role,
                schema,
                &missing,
            )));
        }
        Ok(())
    }

    /// Carries out `changes` on the direct connection, as `role`.
    async fn apply_layout(
        &self,
        admin: &PgPool,
        role: &str,
        changes: &LayoutChanges,
        migrator: &sqlx::migrate::Migrator,
    ) -> Result<(), StoreError> {
        let schema = &self.options.schema;
        // A right the role lacks (insufficient_privilege, classified as `Setup`) names who can.
        let refused = |what: String| {
            move |e: sqlx::Error| match StoreError::from(e) {
                StoreError::Setup(e) => StoreError::Setup(format!(
                    "{what}, and role {role} may not: run `ironflow migrate` as the schema's \
                     owner ({e})"
                )),
                other => other,
            }
        };
        if changes.create_schema {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(admin)
            .await
            .map_err(refused(format!("schema {schema} does not exist")))?;
        }
        if !changes.moves.is_empty() {
            tracing::info!(%schema, objects = changes.moves.len(), "moving an earlier release's tables out of public");
            let mut tx = admin.begin().await?;
            for statement in &changes.moves {
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(refused(format!(
                        "the tables in public must move to {schema}"
                    )))?;
            }
            tx.commit().await?;
        }
        if changes.pending > 0 {
            migrator.run(admin).await.map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => refused(format!(
                    "schema {schema} needs {} migrations applied",
                    changes.pending
                ))(e),
                other => StoreError::from(other),
            })?;
        }
        if changes.views_stale || changes.pending > 0 || !changes.moves.is_empty() {
            let mut tx = admin.begin().await?;
            sqlx::raw_sql(VIEWS_SQL)
                .execute(&mut *tx)
                .await
                .map_err(refused(
                    "the documented views are from another release".into(),
                ))?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "COMMENT ON VIEW ironflow_events IS '{}'",
                views_fingerprint()
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// What a start must change in the schema (nothing, against an up-to-date one).
struct LayoutChanges {
    create_schema: bool,
    /// Statements moving an earlier release's objects out of `public`.
    moves: Vec<String>,
    /// Migrations not applied yet.
    pending: usize,
    /// The views are from another release.
    views_stale: bool,
}

impl LayoutChanges {
    fn any(&self) -> bool {
        self.create_schema || !self.moves.is_empty() || self.pending > 0 || self.views_stale
    }
}

/// The documented views' SQL.
const VIEWS_SQL: &str = include_str!("../../sql/postgres/views.sql");

/// Marks the views a release made, so a start finds them current without replacing them.
fn views_fingerprint() -> String {
    use sha2::Digest as _;
    format!(
        "ironflow views {}",
        &hex::encode(sha2::Sha256::digest(VIEWS_SQL.as_bytes()))[..16]
    )
}

#[derive(sqlx::FromRow)]
struct LayoutRow {
    role: String,
    schema_exists: bool,
    migrated: bool,
    views_current: bool,
}

#[derive(sqlx::FromRow)]
struct PublicFunction {
    name: String,
    args: String,
}

#[derive(sqlx::FromRow)]
struct MissingRightRow {
    privilege: String,
    object: String,
}

struct LayoutFacts {
    role: String,
    schema_exists: bool,
    views_current: bool,
    applied: Vec<i64>,
    public: PublicFacts,
}

#[async_trait::async_trait]
impl Db for PgDb {
    type Conn = sqlx::PgConnection;
    type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
    type Pooled = sqlx::pool::PoolConnection<sqlx::Postgres>;

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn begin(&self) -> Result<Self::Tx, StoreError> {
        self.begin_tx().await
    }

    async fn commit(tx: Self::Tx) -> Result<(), StoreError> {
        super::sql::count_commit();
        Ok(tx.commit().await?)
    }

    async fn reader(&self) -> Result<Self::Pooled, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Pooled, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.run_migrations().await
    }

    async fn listen(&self, wakeups: WakeupSink, shutdown: CancellationToken) {
        self.listen_impl(wakeups, shutdown).await;
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The store on Postgres.
pub type PgStore = SqlStore<PgDb>;

impl PgStore {
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        Ok(SqlStore::new(PgDb::connect(url, options).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_connection_carries_the_schema_and_timeout_a_pooled_one_does_not() {
        let options = PgOptions {
            schema: DbSchema::parse("hist").expect("valid"),
            statement_timeout: Some(Duration::from_millis(2500)),
            application_name: "billing-ironflow".into(),
            ..PgOptions::default()
        };
        let direct = connect_options("postgres://u@db/app", &options, true).expect("valid");
        assert_eq!(
            direct.get_options(),
            Some("-c search_path=hist -c statement_timeout=2500")
        );
        assert_eq!(direct.get_application_name(), Some("billing-ironflow"));
        let pooled = connect_options("postgres://u@pooler/app", &options, false).expect("valid");
        assert_eq!(pooled.get_options(), None, "PgBouncer refuses `options`");
        // Loopback without an sslmode: plaintext; with one, or elsewhere: as asked / prefer.
        assert!(plaintext_by_default(
            "postgres://u@127.0.0.1/app",
            "127.0.0.1"
        ));
        assert!(!plaintext_by_default(
            "postgres://u@127.0.0.1/app?sslmode=require",
            "127.0.0.1"
        ));
        assert!(!plaintext_by_default(
            "postgres://u@db.example.com/app",
            "db.example.com"
        ));
        assert!(matches!(
            connect_options("postgres://u@db:notaport/app", &options, true),
            Err(StoreError::Setup(_))
        ));
    }
}
