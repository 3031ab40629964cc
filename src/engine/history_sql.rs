//! SQL over the whole history (`ExecuteSQL`, `ironflow sql`): a checked SELECT over the
//! documented views, narrowed to the caller's environment, run read-only with a timeout and a
//! row cap.

use std::time::Duration;

use super::{Engine, EngineError};
use crate::domain::history_sql::{QueryLimits, narrow_query};
use crate::ids::EnvId;
use crate::store::sql::{QueryRefusal, TextRows};

/// Timeout when the caller names none, and the longest allowed.
pub const DEFAULT_QUERY_TIMEOUT_MS: i64 = 5_000;
pub const MAX_QUERY_TIMEOUT_MS: i64 = 30_000;
/// Rows when the caller names no cap, and the most allowed.
pub const DEFAULT_QUERY_ROWS: i64 = 1_000;
pub const MAX_QUERY_ROWS: i64 = 10_000;

/// A history query's answer: its rows, and whether the row cap cut it short.
#[derive(Debug, Clone)]
pub struct HistoryRows {
    pub rows: TextRows,
    pub truncated: bool,
}

fn bounded(value: i64, default: i64, max: i64, what: &str) -> Result<i64, EngineError> {
    match value {
        0 => Ok(default),
        n if n < 0 || n > max => Err(EngineError::InvalidArgument(format!(
            "{what} must be between 1 and {max} (got {n})"
        ))),
        n => Ok(n),
    }
}

impl Engine {
    pub async fn execute_history_sql(
        &self,
        env: &EnvId,
        query: &str,
        timeout_ms: i64,
        max_rows: i64,
    ) -> Result<HistoryRows, EngineError> {
        if query.trim().is_empty() {
            return Err(EngineError::InvalidArgument("query is required".into()));
        }
        let timeout_ms = bounded(
            timeout_ms,
            DEFAULT_QUERY_TIMEOUT_MS,
            MAX_QUERY_TIMEOUT_MS,
            "timeout_ms",
        )?;
        let max_rows = bounded(max_rows, DEFAULT_QUERY_ROWS, MAX_QUERY_ROWS, "max_rows")?;
        let relations = self.store().relation_names().await?;
        // Only Postgres stops a statement at its timeout; SQLite's would run on to its end.
        let limits = QueryLimits {
            recursive: self.store().backend() == crate::store::Backend::Postgres,
        };
        let narrowed = narrow_query(query, env.as_str(), &relations, limits)
            .map_err(EngineError::InvalidArgument)?;
        let limit = u64::try_from(timeout_ms).unwrap_or(0);
        // The database's own timeout cuts Postgres off; this one bounds SQLite (and the wait).
        let run = self
            .store()
            .run_history_query(&narrowed, timeout_ms, max_rows + 1);
        let answered = tokio::time::timeout(Duration::from_millis(limit + 1_000), run)
            .await
            .map_err(|_| timed_out(timeout_ms))??;
        let mut rows = match answered {
            Ok(rows) => rows,
            Err(QueryRefusal::Timeout) => return Err(timed_out(timeout_ms)),
            Err(QueryRefusal::Invalid(message)) => {
                return Err(EngineError::InvalidArgument(format!(
                    "the query failed: {message}"
                )));
            }
        };
        let cap = usize::try_from(max_rows).unwrap_or(usize::MAX);
        let truncated = rows.rows.len() > cap;
        rows.rows.truncate(cap);
        Ok(HistoryRows { rows, truncated })
    }
}

fn timed_out(timeout_ms: i64) -> EngineError {
    EngineError::InvalidArgument(format!(
        "the query ran longer than its timeout of {timeout_ms} ms (raise timeout_ms, at most {MAX_QUERY_TIMEOUT_MS}, or narrow the query)"
    ))
}
