//! The database's own commit limit: single-row inserts, one transaction each, over `C`
//! connections at once, the yardstick `ironflow bench` compares durable steps against.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::ConnectOptions as _;

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

/// A pool of the bench's own on the measured database, beside the server's.
pub enum ScratchPool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl ScratchPool {
    pub async fn connect(
        database_url: &str,
        connections: u32,
        schema: &crate::store::pg_layout::DbSchema,
    ) -> anyhow::Result<Self> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            // Seeding a backlog runs long statements on purpose: no slow-statement warnings.
            // The server's schema first; scratch tables land in public while it does not exist.
            let search_path = format!("{schema}, public");
            let options = sqlx::postgres::PgConnectOptions::from_str(database_url)?
                .options([("search_path", search_path)])
                .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(1));
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(connections)
                .min_connections(connections)
                .connect_with(options)
                .await
                .context("connecting to Postgres")?;
            return Ok(Self::Postgres(pool));
        }
        let path = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .unwrap_or(database_url);
        // The store's own settings: WAL, synchronous=NORMAL.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(1));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await
            .context("opening SQLite")?;
        Ok(Self::Sqlite(pool))
    }
}

/// Inserts for `run_for` over `concurrency` connections; counts the commits.
pub async fn measure(
    database_url: &str,
    concurrency: usize,
    run_for: Duration,
) -> anyhow::Result<RawCommits> {
    let connections = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let sql = |backend: fn(crate::store::sql::Sql) -> &'static str| RawSql {
        create: backend(sql!("bench_raw_create")),
        insert: backend(sql!("bench_raw_insert")),
        drop: backend(sql!("bench_raw_drop")),
    };
    match ScratchPool::connect(database_url, connections, &Default::default())
        .await
        .context("for the raw commit rate")?
    {
        ScratchPool::Postgres(pool) => {
            measure_on(pool, sql(|s| s.postgres), concurrency, run_for).await
        }
        ScratchPool::Sqlite(pool) => {
            measure_on(pool, sql(|s| s.sqlite), concurrency, run_for).await
        }
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
