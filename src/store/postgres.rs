//! Postgres backend: the production store (shared by every node).

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use tokio_util::sync::CancellationToken;

use super::db::{Db, SqlStore};
use super::{Backend, StoreError, WakeupSink};

/// Postgres: one pool for reads and writes, and a LISTEN connection.
#[derive(Clone)]
pub struct PgDb {
    pool: PgPool,
    url: String,
    /// Tags this process's NOTIFY payloads so it does not relay its own messages twice.
    node_id: String,
}

impl PgDb {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::Unavailable(format!("bad Postgres URL: {e}")))?
            .application_name("ironflow")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            url: url.to_owned(),
            node_id: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// LISTENs on `ironflow` (one NOTIFY per committing transaction); reconnects when lost.
    async fn listen_impl(
        &self,
        wakeups: super::WakeupSink,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let mut listener = match sqlx::postgres::PgListener::connect(&self.url).await {
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
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        let migrator = sqlx::migrate!("./migrations/postgres");
        // A fresh database has no bookkeeping table yet: no version applied.
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(None);
        super::check_schema_version(applied, &migrator)?;
        migrator.run(&self.pool).await?;
        sqlx::raw_sql(include_str!("../../sql/postgres/views.sql"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
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
        Ok(self.pool.begin().await?)
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
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(SqlStore::new(PgDb::connect(url).await?))
    }
}
