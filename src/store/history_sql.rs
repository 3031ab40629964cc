//! History queries in the store (`ExecuteSQL`): the names a query must not shadow, and the
//! checked, environment-narrowed query run on a read-only connection with a timeout and a row cap.

use async_trait::async_trait;

use super::StoreError;
use super::db::{Db, SqlStore};
use super::sql::{Conn, QueryRefusal, TextRows, args, sql};

#[async_trait]
pub trait HistoryQueryStore: Send + Sync {
    /// The names of every table and view of the database.
    async fn relation_names(&self) -> Result<Vec<String>, StoreError>;

    /// Runs a checked query read-only (at most `max_rows` rows, cut off after `timeout_ms`).
    async fn run_history_query(
        &self,
        sql: &str,
        timeout_ms: i64,
        max_rows: i64,
    ) -> Result<Result<TextRows, QueryRefusal>, StoreError>;
}

#[async_trait]
impl<D: Db> HistoryQueryStore for SqlStore<D> {
    async fn relation_names(&self) -> Result<Vec<String>, StoreError> {
        self.db
            .reader()
            .await?
            .scalars(sql!("relation_names"), args![])
            .await
    }

    async fn run_history_query(
        &self,
        sql: &str,
        timeout_ms: i64,
        max_rows: i64,
    ) -> Result<Result<TextRows, QueryRefusal>, StoreError> {
        self.db
            .reader()
            .await?
            .read_only_rows(sql, timeout_ms, max_rows)
            .await
    }
}
