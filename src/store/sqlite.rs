//! SQLite backend: the single-node default (one process owns the file, WAL mode).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tokio_util::sync::CancellationToken;

use super::db::{Db, SqlStore};
use super::{Backend, StoreError, WakeupSink};

/// Store over a SQLite file: one writer connection (SQLite allows one writer at a time, so
/// queueing in the pool beats busy-waiting in the database) and a small reader pool.
#[derive(Clone)]
pub struct SqliteDb {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteDb {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let base = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite path: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Reads through a memory map instead of a pread per page: every commit invalidates
            // the other connections' page caches, so without it hot pages are read again and
            // again through syscalls.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-32768");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .connect_with(base.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        let migrator = sqlx::migrate!("./migrations/sqlite");
        // A fresh database has no bookkeeping table yet: no version applied.
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.writer)
            .await
            .unwrap_or(None);
        super::check_schema_version(applied, &migrator)?;
        migrator.run(&self.writer).await?;
        sqlx::raw_sql(include_str!("../../sql/sqlite/views.sql"))
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Db for SqliteDb {
    type Conn = sqlx::SqliteConnection;
    type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;
    type Pooled = sqlx::pool::PoolConnection<sqlx::Sqlite>;

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    /// Every writer is in this process: there is no other node to tell.
    fn node_id(&self) -> &str {
        "local"
    }

    async fn begin(&self) -> Result<Self::Tx, StoreError> {
        Ok(self.writer.begin().await?)
    }

    async fn commit(tx: Self::Tx) -> Result<(), StoreError> {
        super::sql::count_commit();
        Ok(tx.commit().await?)
    }

    async fn reader(&self) -> Result<Self::Pooled, StoreError> {
        Ok(self.reader.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Pooled, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.run_migrations().await
    }

    /// One process owns the file: wakeups are in-process, nothing to listen to.
    async fn listen(&self, _wakeups: WakeupSink, _shutdown: CancellationToken) {}

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The store on SQLite.
pub type SqliteStore = SqlStore<SqliteDb>;

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqlStore::new(SqliteDb::open(path).await?))
    }
}

/// A consistent online copy of the database at `source` into `target` (`VACUUM INTO`: one read
/// transaction, so the copy holds exactly what was committed when it began, while a running
/// server goes on writing). SQLite refuses a `target` that exists and is not empty.
pub async fn backup(source: &Path, target: &Path) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", source.display()))
        .map_err(|e| StoreError::Invalid(format!("bad SQLite path: {e}")))?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = sqlx::ConnectOptions::connect(&options).await?;
    let into = target.display().to_string();
    sqlx::query("VACUUM INTO ?1")
        .bind(&into)
        .execute(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(())
}
