//! The database's own commit limit: single-row inserts, one transaction each, over `C`
//! connections at once, the yardstick `ironflow bench` compares durable steps against.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::store::sql::sql;

/// What one raw measurement found.
#[derive(Debug, Clone, Copy)]
pub struct RawCommits {
    pub commits: u64,
    pub elapsed: Duration,
}

impl RawCommits {
    pub fn per_sec(&self) -> f64 {
        self.commits as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// The scratch table's statements for one backend.
struct RawSql {
    create: &'static str,
    insert: &'static str,
    drop: &'static str,
}

/// Inserts for `run_for` over `concurrency` connections; counts the commits.
pub async fn measure(
    database_url: &str,
    concurrency: usize,
    run_for: Duration,
) -> anyhow::Result<RawCommits> {
    let connections = u32::try_from(concurrency).unwrap_or(u32::MAX);
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .min_connections(connections)
            .connect(database_url)
            .await
            .context("connecting to Postgres for the raw commit rate")?;
        let sql = RawSql {
            create: sql!("bench_raw_create").postgres,
            insert: sql!("bench_raw_insert").postgres,
            drop: sql!("bench_raw_drop").postgres,
        };
        measure_on(pool, sql, concurrency, run_for).await
    } else {
        let path = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .unwrap_or(database_url);
        // The store's own settings: WAL, synchronous=NORMAL.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .context("opening SQLite for the raw commit rate")?;
        let sql = RawSql {
            create: sql!("bench_raw_create").sqlite,
            insert: sql!("bench_raw_insert").sqlite,
            drop: sql!("bench_raw_drop").sqlite,
        };
        measure_on(pool, sql, concurrency, run_for).await
    }
}

/// Creates the scratch table, hammers it, drops it, closes the pool.
async fn measure_on<DB>(
    pool: sqlx::Pool<DB>,
    sql: RawSql,
    concurrency: usize,
    run_for: Duration,
) -> anyhow::Result<RawCommits>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i32: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(sql.create).execute(&pool).await?;
    let writers = pool.clone();
    let insert = sql.insert;
    let result = hammer(concurrency, run_for, move |writer, n| {
        let pool = writers.clone();
        async move {
            sqlx::query(insert)
                .bind(writer)
                .bind(n)
                .execute(&pool)
                .await
                .map(|_| ())
        }
    })
    .await;
    sqlx::query(sql.drop).execute(&pool).await?;
    pool.close().await;
    result
}

/// Runs `insert` in `concurrency` loops until `run_for` has passed.
async fn hammer<F, Fut>(
    concurrency: usize,
    run_for: Duration,
    insert: F,
) -> anyhow::Result<RawCommits>
where
    F: Fn(i32, i32) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'static,
{
    let insert = Arc::new(insert);
    let commits = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::with_capacity(concurrency);
    for writer in 0..concurrency {
        let (insert, commits, stop) = (insert.clone(), commits.clone(), stop.clone());
        let writer = i32::try_from(writer).unwrap_or(i32::MAX);
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                insert(writer, n).await?;
                commits.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<(), sqlx::Error>(())
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.context("a raw writer panicked")??;
    }
    Ok(RawCommits {
        commits: commits.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}
