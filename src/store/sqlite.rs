//! SQLite backend: the single-node default (one process owns the file, WAL mode).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StoreError;

/// Store over a SQLite file: one writer connection (SQLite allows one writer at a time, so
/// queueing in the pool beats busy-waiting in the database) and a small reader pool.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
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

    fn node_id(&self) -> &str {
        "local"
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    async fn listen_impl(
        &self,
        _wakeups: super::WakeupSink,
        _shutdown: tokio_util::sync::CancellationToken,
    ) {
    }

    async fn run_migrations(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        sqlx::raw_sql(include_str!("../../sql/sqlite/views.sql"))
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

super::sql_store::sql_store!(SqliteStore, sqlx::Sqlite, "sqlite", super::Backend::Sqlite);
