//! How store code talks to either database with one body of Rust: a query's text for each
//! backend ([`Sql`], from the one include macro [`sql!`]), its parameters ([`Arg`], built with
//! [`args!`]), rows as named structs that decode on both ([`Record`]), single values
//! ([`Scalar`]), and [`Conn`]: execute and fetch on a connection or transaction of either.
//!
//! sqlx's own generic bounds (`Encode`/`Decode`/`Type` per parameter type and backend) would
//! have to be repeated on every generic function; binding our own small parameter enum in one
//! place per backend keeps the store code free of them (and of macros).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Database, Decode, FromRow, Postgres, Sqlite, Type};

use super::StoreError;
use crate::domain::time::Ts;

/// A query as each backend spells it (`sql/postgres/<name>.sql`, `sql/sqlite/<name>.sql`).
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub name: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

/// `sql!("claim_jobs")`: both backends' text of a query file, checked to exist at compile time.
macro_rules! sql {
    ($name:literal) => {
        $crate::store::sql::Sql {
            name: $name,
            postgres: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/sql/postgres/",
                $name,
                ".sql"
            )),
            sqlite: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/sql/sqlite/",
                $name,
                ".sql"
            )),
        }
    };
}
pub(crate) use sql;

/// One query parameter. `None` binds SQL `NULL` of the variant's type.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Int32(Option<i32>),
    Float(Option<f64>),
    Bool(Option<bool>),
    /// Bound as `jsonb` on Postgres, as JSON text on SQLite.
    Json(Option<&'a Value>),
    Ts(Option<Ts>),
    Bytes(Option<&'a [u8]>),
}

/// `args![a, b, c]`: a parameter list, each converted with `Arg::from`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$($crate::store::sql::Arg::from($arg)),*]
    };
}
pub(crate) use args;

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(Some(v))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::Text(v)
    }
}
impl<'a> From<Option<&'a String>> for Arg<'a> {
    fn from(v: Option<&'a String>) -> Self {
        Self::Text(v.map(String::as_str))
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Self::Int32(Some(v))
    }
}
impl From<Option<i32>> for Arg<'_> {
    fn from(v: Option<i32>) -> Self {
        Self::Int32(v)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Self::Float(Some(v))
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(Some(v))
    }
}
impl<'a> From<&'a Value> for Arg<'a> {
    fn from(v: &'a Value) -> Self {
        Self::Json(Some(v))
    }
}
impl<'a> From<Option<&'a Value>> for Arg<'a> {
    fn from(v: Option<&'a Value>) -> Self {
        Self::Json(v)
    }
}
impl From<Ts> for Arg<'_> {
    fn from(v: Ts) -> Self {
        Self::Ts(Some(v))
    }
}
impl From<Option<Ts>> for Arg<'_> {
    fn from(v: Option<Ts>) -> Self {
        Self::Ts(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Self::Bytes(Some(v))
    }
}
impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Self::Bytes(v)
    }
}

/// A row struct (`#[derive(sqlx::FromRow)]`) that decodes from both backends' rows.
pub trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// A single column value that decodes on both backends.
pub trait Scalar:
    for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + Send
    + Unpin
{
}
impl<T> Scalar for T where
    T: for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + Send
        + Unpin
{
}

/// Execute and fetch on one connection (a pooled one, or a transaction's) of either backend.
#[async_trait]
pub trait Conn: Send {
    async fn execute(&mut self, sql: Sql, args: Vec<Arg<'_>>) -> Result<u64, StoreError>;

    async fn fetch_all<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<R>, StoreError>;

    async fn fetch_optional<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<R>, StoreError>;

    /// All values of the first column.
    async fn scalars<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<T>, StoreError>;

    /// The first column of the first row, if there is a row.
    async fn scalar_optional<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<T>, StoreError>;

    /// Exactly one row's record; no row is an internal error naming the query.
    async fn fetch_one<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<R, StoreError> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("{}: no row", sql.name)))
    }

    /// Exactly one row's first column.
    /// A statement the server composed at run time (a SQL projection's table, handler or query,
    /// re-rendered from its checked syntax tree; values are bound, never spliced). The raw
    /// database error is kept, so a handler's failure can be told apart by its SQLSTATE.
    async fn execute_composed(&mut self, sql: &str, args: Vec<Arg<'_>>)
    -> Result<u64, sqlx::Error>;

    /// A composed query whose one column is a JSON document per row.
    async fn fetch_composed_json(
        &mut self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<Value>, StoreError>;

    /// A composed query of one integer (a count).
    async fn composed_count(&mut self, sql: &str) -> Result<i64, StoreError>;

    /// Runs a checked history query read-only, cut off after `timeout_ms`, at most `max_rows`
    /// rows, every value as text (`None` for NULL). A query the database refuses (its own
    /// mistake, or the timeout) is `Ok(Err(..))`, with the database's message for the
    /// query's mistakes (syntax, unknown column, bad value: about the caller's text).
    async fn read_only_rows(
        &mut self,
        sql: &str,
        timeout_ms: i64,
        max_rows: i64,
    ) -> Result<Result<TextRows, QueryRefusal>, StoreError>;

    async fn scalar<T: Scalar>(&mut self, sql: Sql, args: Vec<Arg<'_>>) -> Result<T, StoreError> {
        self.scalar_optional(sql, args)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("{}: no row", sql.name)))
    }
}

/// The statements of a query file: each ends with `;` at the end of a line (comment-only
/// pieces are dropped). sqlx would run a multi-statement text too, but it numbers the unnamed
/// slots before a statement's first `?N` from where the previous statement stopped, so a later
/// statement that uses only `?5` would bind the wrong value.
fn statements(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.split_inclusive(";\n").map(str::trim).filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
    })
}

/// The three sqlx query builders, which bind alike.
trait Bind<'q, DB: Database>: Sized {
    fn bind_one<T: 'q + sqlx::Encode<'q, DB> + Type<DB>>(self, value: T) -> Self;
}

impl<'q, DB: Database> Bind<'q, DB> for sqlx::query::Query<'q, DB, <DB as Database>::Arguments> {
    fn bind_one<T: 'q + sqlx::Encode<'q, DB> + Type<DB>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, DB: Database, O> Bind<'q, DB>
    for sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments>
{
    fn bind_one<T: 'q + sqlx::Encode<'q, DB> + Type<DB>>(self, value: T) -> Self {
        self.bind(value)
    }
}

impl<'q, DB: Database, O> Bind<'q, DB>
    for sqlx::query::QueryScalar<'q, DB, O, <DB as Database>::Arguments>
{
    fn bind_one<T: 'q + sqlx::Encode<'q, DB> + Type<DB>>(self, value: T) -> Self {
        self.bind(value)
    }
}

/// Statements and commits this process has sent to its database, for `ironflow bench`'s
/// round trips per step (relaxed counters: a figure, not a synchronisation point).
static STATEMENTS_SENT: AtomicU64 = AtomicU64::new(0);
static COMMITS_SENT: AtomicU64 = AtomicU64::new(0);

/// What this process has sent to its database so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundTrips {
    pub statements: u64,
    pub commits: u64,
}

impl RoundTrips {
    pub fn so_far() -> Self {
        Self {
            statements: STATEMENTS_SENT.load(Ordering::Relaxed),
            commits: COMMITS_SENT.load(Ordering::Relaxed),
        }
    }

    pub fn since(self, earlier: Self) -> Self {
        Self {
            statements: self.statements.saturating_sub(earlier.statements),
            commits: self.commits.saturating_sub(earlier.commits),
        }
    }
}

/// Counts a transaction's commit (the backends' `Db::commit`).
pub(super) fn count_commit() {
    COMMITS_SENT.fetch_add(1, Ordering::Relaxed);
}

/// Binds our parameters to a query of either backend (the bounds say that every parameter
/// type is encodable there). Every statement passes here once, so here it is counted.
fn bind_all<'q, DB, Q>(mut query: Q, args: Vec<Arg<'q>>) -> Q
where
    DB: Database,
    Q: Bind<'q, DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<i32>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<f64>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<bool>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<sqlx::types::Json<&'q Value>>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<Ts>: sqlx::Encode<'q, DB> + Type<DB>,
    Option<&'q [u8]>: sqlx::Encode<'q, DB> + Type<DB>,
{
    STATEMENTS_SENT.fetch_add(1, Ordering::Relaxed);
    for arg in args {
        query = match arg {
            Arg::Text(v) => query.bind_one(v),
            Arg::Int(v) => query.bind_one(v),
            Arg::Int32(v) => query.bind_one(v),
            Arg::Float(v) => query.bind_one(v),
            Arg::Bool(v) => query.bind_one(v),
            Arg::Json(v) => query.bind_one(v.map(sqlx::types::Json)),
            Arg::Ts(v) => query.bind_one(v),
            Arg::Bytes(v) => query.bind_one(v),
        };
    }
    query
}

/// Rows of a history query: the column names and each row's values as text.
#[derive(Debug, Clone, Default)]
pub struct TextRows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Why the database refused a history query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRefusal {
    Timeout,
    Invalid(String),
}

/// A refusal that is about the caller's query (its syntax, names or values), by SQLSTATE class
/// (Postgres) or SQLite's generic error: its message describes their text, not the server.
fn query_refusal(err: &sqlx::Error) -> Option<QueryRefusal> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let code = db.code().map(|c| c.to_string()).unwrap_or_default();
    if code == "57014" {
        return Some(QueryRefusal::Timeout);
    }
    let about_the_query = code.starts_with("42")
        || code.starts_with("22")
        || code.starts_with("54")
        || code == "21000"
        || code == "0A000"
        || code == "1"
        || code == "25006";
    about_the_query.then(|| QueryRefusal::Invalid(db.message().to_owned()))
}

/// A composed query's failure that its caller's text caused (a bad value in a filter, division by
/// zero) is `Invalid` (the caller's 400), not the server's 500.
fn composed_error(err: sqlx::Error) -> StoreError {
    match query_refusal(&err) {
        Some(_) => StoreError::Invalid(err.to_string()),
        None => err.into(),
    }
}

async fn pg_columns(conn: &mut sqlx::PgConnection, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::{Column as _, Executor as _};
    let described = conn
        .describe(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(
            sql.to_owned(),
        )))
        .await?;
    Ok(described
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect())
}

async fn sqlite_columns(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::{Column as _, Executor as _};
    let described = conn
        .describe(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(
            sql.to_owned(),
        )))
        .await?;
    Ok(described
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect())
}

/// Behind a transaction-mode pooler a statement outside a transaction runs in one of its own:
/// its unnamed prepare and its execution must reach the same server connection, and the
/// transaction carries the session settings ([`super::postgres::pooled_begin`]).
macro_rules! standalone {
    ($conn:ident, $run:expr) => {{
        if super::postgres::pooled_begin().is_some()
            && !sqlx::Connection::is_in_transaction(&*$conn)
        {
            let mut tx = super::postgres::begin_on(&mut *$conn).await?;
            let out = {
                let $conn: &mut sqlx::PgConnection = &mut tx;
                $run
            };
            tx.commit().await?;
            out
        } else {
            $run
        }
    }};
}

/// Whether statements may be prepared by name and cached: not behind a transaction-mode pooler,
/// where the next transaction may reach a server connection that never saw the name.
fn prepared() -> bool {
    super::postgres::pooled_begin().is_none()
}

#[async_trait]
impl Conn for sqlx::PgConnection {
    async fn execute(&mut self, sql: Sql, args: Vec<Arg<'_>>) -> Result<u64, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(sqlx::query(sql.postgres).persistent(prepared()), args);
            query.execute(&mut *conn).await?.rows_affected()
        }))
    }

    async fn fetch_all<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<R>, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(
                sqlx::query_as::<_, R>(sql.postgres).persistent(prepared()),
                args,
            );
            query.fetch_all(&mut *conn).await?
        }))
    }

    async fn fetch_optional<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<R>, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(
                sqlx::query_as::<_, R>(sql.postgres).persistent(prepared()),
                args,
            );
            query.fetch_optional(&mut *conn).await?
        }))
    }

    async fn scalars<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(
                sqlx::query_scalar::<_, T>(sql.postgres).persistent(prepared()),
                args,
            );
            query.fetch_all(&mut *conn).await?
        }))
    }

    async fn scalar_optional<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<T>, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(
                sqlx::query_scalar::<_, T>(sql.postgres).persistent(prepared()),
                args,
            );
            query.fetch_optional(&mut *conn).await?
        }))
    }
    async fn execute_composed(
        &mut self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> Result<u64, sqlx::Error> {
        let conn = self;
        Ok(standalone!(conn, {
            let query = bind_all(
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).persistent(prepared()),
                args,
            );
            query.execute(&mut *conn).await?.rows_affected()
        }))
    }

    async fn fetch_composed_json(
        &mut self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<Value>, StoreError> {
        let conn = self;
        let rows = standalone!(conn, {
            let query = bind_all(
                sqlx::query_scalar::<_, sqlx::types::Json<Value>>(sqlx::AssertSqlSafe(
                    sql.to_owned(),
                ))
                .persistent(prepared()),
                args,
            );
            query.fetch_all(&mut *conn).await.map_err(composed_error)?
        });
        Ok(rows.into_iter().map(|j| j.0).collect())
    }

    async fn composed_count(&mut self, sql: &str) -> Result<i64, StoreError> {
        let conn = self;
        Ok(standalone!(conn, {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
                .persistent(prepared())
                .fetch_one(&mut *conn)
                .await
                .map_err(composed_error)?
        }))
    }

    async fn read_only_rows(
        &mut self,
        sql: &str,
        timeout_ms: i64,
        max_rows: i64,
    ) -> Result<Result<TextRows, QueryRefusal>, StoreError> {
        // A sqlx transaction: rolled back even if this future is dropped half-way.
        let mut tx = super::postgres::begin_on(&mut *self).await?;
        let run = async {
            sqlx::query("SET TRANSACTION READ ONLY")
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL statement_timeout = {}",
                timeout_ms.max(1)
            )))
            .persistent(false)
            .execute(&mut *tx)
            .await?;
            // The role that may read the views and nothing else, where the database has it.
            let reader_role: bool = sqlx::query_scalar(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ironflow_history_reader') \
                 THEN pg_has_role(current_user, 'ironflow_history_reader', 'MEMBER') ELSE false END",
            )
            .persistent(prepared())
            .fetch_one(&mut *tx)
            .await?;
            if reader_role {
                sqlx::query("SET LOCAL ROLE ironflow_history_reader")
                    .persistent(false)
                    .execute(&mut *tx)
                    .await?;
            }
            let columns = pg_columns(&mut tx, sql).await?;
            // One JSON array per row, in column order (json_each keeps a json object's order).
            let wrapped = format!(
                "SELECT (SELECT json_agg(j.value ORDER BY j.n) FROM json_each(row_to_json(q)) \
                 WITH ORDINALITY AS j(key, value, n))::text FROM ({sql}) q LIMIT {max_rows}"
            );
            let rows: Vec<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
            Ok::<_, sqlx::Error>((columns, rows))
        }
        .await;
        let _ = tx.rollback().await;
        match run {
            Ok((columns, rows)) => {
                let rows = rows
                    .into_iter()
                    .map(|r| {
                        let values: Vec<Value> = r
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_default();
                        values
                            .into_iter()
                            .map(|v| match v {
                                Value::Null => None,
                                Value::String(s) => Some(s),
                                other => Some(other.to_string()),
                            })
                            .collect()
                    })
                    .collect();
                Ok(Ok(TextRows { columns, rows }))
            }
            Err(err) => match query_refusal(&err) {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(err.into()),
            },
        }
    }
}

#[async_trait]
impl Conn for sqlx::SqliteConnection {
    /// A file may hold several statements (SQLite has no data-modifying WITH to make one of
    /// them): each runs on its own with all the parameters, so `?N` means the same everywhere.
    async fn execute(&mut self, sql: Sql, args: Vec<Arg<'_>>) -> Result<u64, StoreError> {
        let mut affected = 0;
        for statement in statements(sql.sqlite) {
            let query = bind_all(sqlx::query(statement), args.clone());
            affected += query.execute(&mut *self).await?.rows_affected();
        }
        Ok(affected)
    }

    async fn fetch_all<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<R>, StoreError> {
        let query = bind_all(sqlx::query_as::<_, R>(sql.sqlite), args);
        Ok(query.fetch_all(self).await?)
    }

    async fn fetch_optional<R: Record>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<R>, StoreError> {
        let query = bind_all(sqlx::query_as::<_, R>(sql.sqlite), args);
        Ok(query.fetch_optional(self).await?)
    }

    async fn scalars<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<T>, StoreError> {
        let query = bind_all(sqlx::query_scalar::<_, T>(sql.sqlite), args);
        Ok(query.fetch_all(self).await?)
    }

    async fn scalar_optional<T: Scalar>(
        &mut self,
        sql: Sql,
        args: Vec<Arg<'_>>,
    ) -> Result<Option<T>, StoreError> {
        let query = bind_all(sqlx::query_scalar::<_, T>(sql.sqlite), args);
        Ok(query.fetch_optional(self).await?)
    }
    async fn execute_composed(
        &mut self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> Result<u64, sqlx::Error> {
        let query = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())), args);
        Ok(query.execute(self).await?.rows_affected())
    }

    async fn fetch_composed_json(
        &mut self,
        sql: &str,
        args: Vec<Arg<'_>>,
    ) -> Result<Vec<Value>, StoreError> {
        let query = bind_all(
            sqlx::query_scalar::<_, sqlx::types::Json<Value>>(sqlx::AssertSqlSafe(sql.to_owned())),
            args,
        );
        Ok(query
            .fetch_all(self)
            .await
            .map_err(composed_error)?
            .into_iter()
            .map(|j| j.0)
            .collect())
    }

    async fn composed_count(&mut self, sql: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self)
            .await
            .map_err(composed_error)
    }

    async fn read_only_rows(
        &mut self,
        sql: &str,
        _timeout_ms: i64,
        max_rows: i64,
    ) -> Result<Result<TextRows, QueryRefusal>, StoreError> {
        use sqlx::{Row as _, TypeInfo as _, ValueRef as _};
        // The reader pool's connections are read-only; the caller bounds the time.
        let run = async {
            let columns = sqlite_columns(self, sql).await?;
            let wrapped = format!("SELECT * FROM ({sql}) LIMIT {max_rows}");
            let rows = sqlx::query(sqlx::AssertSqlSafe(wrapped))
                .fetch_all(&mut *self)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut values = Vec::with_capacity(columns.len());
                for i in 0..row.len() {
                    let raw = row.try_get_raw(i)?;
                    let value = if raw.is_null() {
                        None
                    } else {
                        match raw.type_info().name() {
                            "INTEGER" => row.try_get::<i64, _>(i).ok().map(|v| v.to_string()),
                            "REAL" => row.try_get::<f64, _>(i).ok().map(|v| v.to_string()),
                            "BLOB" => row
                                .try_get::<Vec<u8>, _>(i)
                                .ok()
                                .map(|b| String::from_utf8_lossy(&b).into_owned()),
                            _ => row.try_get::<String, _>(i).ok(),
                        }
                    };
                    values.push(value);
                }
                out.push(values);
            }
            Ok::<_, sqlx::Error>((columns, out))
        }
        .await;
        match run {
            Ok((columns, rows)) => Ok(Ok(TextRows { columns, rows })),
            Err(err) => match query_refusal(&err) {
                Some(refusal) => Ok(Err(refusal)),
                None => Err(err.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn a_file_splits_into_its_statements() {
        let text = "-- two writes\nINSERT INTO a\nSELECT ?1;\nDELETE FROM b WHERE x = ?2;\n";
        let found: Vec<&str> = statements(text).collect();
        assert_eq!(
            found,
            [
                "-- two writes\nINSERT INTO a\nSELECT ?1;",
                "DELETE FROM b WHERE x = ?2;"
            ]
        );
        assert_eq!(statements("SELECT 1;\n-- trailing note\n").count(), 1);
        assert_eq!(statements("SELECT 1").collect::<Vec<_>>(), ["SELECT 1"]);
    }
}
