//! `ironflow bench --backlog N`: work queued behind the measured runs, seeded set-wise — `N`
//! queued runs (with their job rows) of a function no worker serves, and history rows spread
//! over them — then fresh planner statistics, so the figures show what the backlog costs the
//! hot path and not a planner catching up.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::raw_commits::ScratchPool;
use crate::domain::time::Ts;
use crate::store::sql::{Arg, Conn as _, Sql, args, sql};

/// Rows per statement: short enough that the server's own writes (SQLite has one writer) are
/// never held off for long, long enough that seeding is set-wise.
const RUNS_PER_STATEMENT: u64 = 50_000;
const HISTORY_PER_STATEMENT: u64 = 200_000;

#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub runs: u64,
    pub history: u64,
}

/// Seeds the backlog of `function_id` (registered already); returns how long it took.
pub async fn seed(
    database_url: &str,
    function_id: &str,
    backlog: Backlog,
    schema: &crate::store::pg_layout::DbSchema,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    if backlog.runs == 0 {
        return Ok(started.elapsed());
    }
    let pool = ScratchPool::connect(database_url, 1, schema)
        .await
        .context("connecting to seed the backlog")?;
    let now = Ts::now();
    for (from, to) in chunks(backlog.runs, RUNS_PER_STATEMENT) {
        for file in [sql!("bench_backlog_runs"), sql!("bench_backlog_jobs")] {
            run(&pool, file, args![function_id, from, to, now])
                .await
                .context("seeding queued runs")?;
        }
    }
    for (from, to) in chunks(backlog.history, HISTORY_PER_STATEMENT) {
        let runs = i64::try_from(backlog.runs).unwrap_or(i64::MAX);
        let args = args![function_id, runs, from, to, now];
        run(&pool, sql!("bench_backlog_history"), args)
            .await
            .context("seeding history")?;
    }
    run(&pool, sql!("bench_backlog_analyze"), args![])
        .await
        .context("analyzing the seeded tables")?;
    match pool {
        ScratchPool::Postgres(p) => p.close().await,
        ScratchPool::Sqlite(p) => p.close().await,
    }
    Ok(started.elapsed())
}

/// `1..=total` in inclusive ranges of at most `size`.
fn chunks(total: u64, size: u64) -> impl Iterator<Item = (i64, i64)> {
    (0..total.div_ceil(size)).map(move |c| {
        let from = c * size + 1;
        let to = ((c + 1) * size).min(total);
        (
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        )
    })
}

async fn run(pool: &ScratchPool, file: Sql, args: Vec<Arg<'_>>) -> anyhow::Result<()> {
    match pool {
        ScratchPool::Postgres(p) => p.acquire().await?.execute(file, args).await?,
        ScratchPool::Sqlite(p) => p.acquire().await?.execute(file, args).await?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_every_row_once() {
        assert_eq!(chunks(5, 2).collect::<Vec<_>>(), [(1, 2), (3, 4), (5, 5)]);
        assert_eq!(chunks(4, 2).collect::<Vec<_>>(), [(1, 2), (3, 4)]);
        assert_eq!(chunks(0, 2).count(), 0);
    }
}
