//! The backend contract: what the one store implementation ([`SqlStore`]) needs of a database —
//! transactions on the writer, pooled connections for reads, migrations, cross-node wakeups,
//! shutdown. Postgres ([`super::postgres::PgDb`]) and SQLite ([`super::sqlite::SqliteDb`])
//! implement it; everything above it is written once.

use std::ops::DerefMut;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::sql::Conn;
use super::{Backend, StoreError, WakeupSink};

#[async_trait]
pub trait Db: Clone + Send + Sync + 'static {
    /// A connection of this database, on which [`Conn`] runs queries.
    type Conn: Conn;
    /// A write transaction (dereferences to its connection).
    type Tx: DerefMut<Target = Self::Conn> + Send;
    /// A pooled connection (dereferences to it).
    type Pooled: DerefMut<Target = Self::Conn> + Send;

    fn backend(&self) -> Backend;

    /// Tags this process's NOTIFY payloads, so it does not act on its own twice.
    fn node_id(&self) -> &str;

    /// A transaction on the writer.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;

    async fn commit(tx: Self::Tx) -> Result<(), StoreError>;

    /// A connection for reads (SQLite: the read-only pool).
    async fn reader(&self) -> Result<Self::Pooled, StoreError>;

    /// A connection for a single autocommitted write (SQLite: the one writer).
    async fn writer(&self) -> Result<Self::Pooled, StoreError>;

    /// Applies pending migrations and (re)creates the documented views.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Delivers other nodes' wakeups until shutdown (Postgres LISTEN; nothing on SQLite).
    async fn listen(&self, wakeups: WakeupSink, shutdown: CancellationToken);

    async fn close(&self);
}

/// The store: every area's trait implemented once over any [`Db`]. Cheap to clone (the pools
/// are shared).
#[derive(Clone)]
pub struct SqlStore<D: Db> {
    pub(crate) db: D,
}

impl<D: Db> SqlStore<D> {
    pub fn new(db: D) -> Self {
        Self { db }
    }
}
