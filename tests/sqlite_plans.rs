//! SQLite's planner behind a deep queue: with one function's 3 000 queued runs (every job's
//! dispatch id NULL, every run in one environment, half of them without an event), their
//! events and history, then ANALYZE, the hot-path
//! statements still probe their indexes instead of walking the queue, the environment or the
//! history. (Statistics that count NULLs as one value and environments as one key made SQLite
//! 3.51 scan the jobs table on every claim and report; the files name their indexes.) Postgres
//! needs no such test: its statistics know NULL fractions, and the bench's `--backlog` figures
//! show its plans stay flat.

mod common;

use common::{Backend, TestServer, raw_execute};
use serde_json::json;

/// A statement the planner must not run: a full scan of a big table, or a walk of every row of
/// an environment where the statement names its rows.
fn walks_a_big_table(step: &str) -> bool {
    let big = ["jobs", "runs", "history", "steps", "events", "waits"];
    let table = step.split_whitespace().nth(1).unwrap_or("");
    let aliases = ["j", "r", "e", "h", "s", "w"];
    let on_big = big.contains(&table) || aliases.contains(&table);
    let scan = step.starts_with("SCAN ") && !step.contains("VIRTUAL TABLE");
    let env_walk = step.ends_with("(env_id=?)");
    on_big && (scan || env_walk)
}

/// The statement(s) of `sql/sqlite/<name>.sql`, comments dropped.
fn statements(name: &str) -> Vec<String> {
    let path = format!("{}/sql/sqlite/{name}.sql", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("query file");
    text.split(";\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
        .collect()
}

#[tokio::test]
async fn hot_path_statements_probe_their_indexes_behind_a_deep_queue() {
    let server = TestServer::start(Backend::Sqlite).await;
    for id in ["deep", "served"] {
        server
            .register_function(json!({"id": id, "triggers": [{"event": format!("{id}.go")}]}))
            .await;
    }
    let served_run = server.emit_runs("served.go", json!({})).await.remove(0);
    let seed = "
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 3000)
        INSERT INTO events (id, env_id, name, data, metadata, source, received_at)
        SELECT 'ev-' || n, f.env_id, 'deep.go', '{}', '{}', 'test', '2026-01-01T00:00:00.000000Z'
        FROM functions f, g WHERE f.id = 'deep';
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 3000)
        INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input,
                          max_attempts, created_at, updated_at, attempt)
        SELECT 'deep-' || n, f.env_id, f.id, f.version, CASE WHEN n % 2 = 0 THEN 'ev-' || n END,
               'running', '{}', 3, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', 1
        FROM functions f, g WHERE f.id = 'deep';
        INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, created_at)
        SELECT seq, id, env_id, function_id, 'queued', created_at, created_at
        FROM runs WHERE function_id = 'deep';
        INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, payload)
        SELECT created_at, env_id, 'run.created', id, function_id, '{}' FROM runs
        WHERE function_id = 'deep';
        ANALYZE;";
    raw_execute(&server.url, seed).await.expect("seeded");

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.url))
        .await
        .expect("connect");
    let env: String = sqlx::query_scalar("SELECT env_id FROM functions WHERE id = 'served'")
        .fetch_one(&pool)
        .await
        .expect("env");
    let now = "2099-01-01T00:00:00.000000Z";
    let functions = json!(["served"]).to_string();
    let runs = json!([served_run, "deep-7"]).to_string();
    let dispatches = json!(["deep-7.1", "deep-8.1"]).to_string();
    // Each file with its parameters as the store binds them.
    let checked: Vec<(&str, Vec<String>)> = vec![
        (
            "claim_jobs",
            vec![
                env.clone(),
                functions,
                now.into(),
                "32".into(),
                "w".into(),
                now.into(),
                "pull".into(),
            ],
        ),
        ("lock_report_facts", vec![dispatches.clone()]),
        ("lock_report_jobs", vec![dispatches]),
        ("lock_due_jobs", vec![now.into(), "100".into()]),
        ("next_due", vec![now.into()]),
        ("runs_by_ids", vec![env.clone(), runs]),
        ("get_run", vec![env.clone(), served_run.clone()]),
        ("run_history", vec![env.clone(), served_run.clone()]),
        ("run_ids_for_event", vec![env.clone(), "ev".into()]),
        (
            "count_lane_active",
            vec![env.clone(), "deep".into(), String::new()],
        ),
        (
            "blocked_in_lane",
            vec![env, "deep".into(), String::new(), "10".into()],
        ),
    ];
    let mut walks = Vec::new();
    for (name, binds) in &checked {
        for statement in statements(name) {
            let explain = format!("EXPLAIN QUERY PLAN {statement}");
            let mut query =
                sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
            for b in binds {
                query = query.bind(b.clone());
            }
            for (_, _, _, step) in query.fetch_all(&pool).await.expect("plan") {
                if walks_a_big_table(&step) {
                    walks.push(format!("{name}: {step}"));
                }
            }
        }
    }
    pool.close().await;
    assert!(
        walks.is_empty(),
        "statements that walk a big table: {walks:#?}"
    );
}

#[test]
fn a_walk_is_told_from_a_probe() {
    assert!(walks_a_big_table("SCAN jobs"));
    assert!(walks_a_big_table(
        "SCAN j USING INDEX sqlite_autoindex_jobs_1"
    ));
    assert!(walks_a_big_table(
        "SEARCH r USING INDEX runs_env_status_seq (env_id=?)"
    ));
    assert!(!walks_a_big_table(
        "SEARCH j USING INDEX jobs_dispatch (dispatch_id=?)"
    ));
    assert!(!walks_a_big_table("SCAN json_each VIRTUAL TABLE INDEX 1:"));
    assert!(!walks_a_big_table("SCAN f"));
}
