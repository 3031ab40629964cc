//! History retention: per environment, keep everything by default; a pass removes finished runs
//! with their steps, events no remaining run refers to, and history entries past the setting —
//! on Postgres by dropping whole monthly partitions every environment has expired (SQL checks on
//! the partitions), on SQLite in batches.

mod common;

use std::time::Duration;

use common::{Backend, FakeWorker, TestServer, raw_count, raw_execute, step_entry};
use ironflow::domain::time::Ts;
use serde_json::{Value, json};

const DAY: Duration = Duration::from_secs(86_400);

fn ago(days: u64) -> String {
    Ts::now().minus(DAY * days as u32).to_rfc3339()
}

async fn env_id(server: &TestServer, name: &str) -> String {
    let envs: Value = server.get_json("/api/v1/environments").await;
    let list = envs["environments"]
        .as_array()
        .or(envs.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("environment {name} in {envs}"))
        .to_owned()
}

async fn set_retention(server: &TestServer, env: &str, days: Value) -> (u16, Value) {
    let r = server
        .http
        .put(format!(
            "{}/api/v1/environments/{env}/retention",
            server.base
        ))
        .bearer_auth(&server.key)
        .json(&json!({ "retention_days": days }))
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Completes one run of `function` with one step; returns (run id, event id).
async fn completed_run(
    server: &TestServer,
    worker: &FakeWorker,
    function: &str,
) -> (String, String) {
    let (status, emitted) = server
        .emit_json(&json!({"name": format!("{function}.go"), "data": {}}))
        .await;
    assert_eq!(status, 200, "{emitted}");
    let run_id = emitted["run_ids"][0].as_str().expect("a run").to_owned();
    let job = worker.next_job().await;
    assert_eq!(job["run_id"], run_id.as_str());
    assert_eq!(worker.ack(&job).await, 200);
    let (status, body) = worker
        .report(
            &job,
            json!({"status": "completed", "output": 1, "steps": [step_entry(&run_id, "s", json!(1))]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        run_id,
        emitted["event_id"].as_str().expect("event").to_owned(),
    )
}

async fn expired_rows_are_removed_and_the_rest_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let env = env_id(&server, "default").await;
    for f in ["gone", "fresh", "waiting"] {
        server
            .register_function(json!({"id": f, "triggers": [{"event": format!("{f}.go")}]}))
            .await;
    }
    let worker = FakeWorker::register(&server, "w-ret", &["gone", "fresh"]).await;
    let old_a = completed_run(&server, &worker, "gone").await;
    let old_b = completed_run(&server, &worker, "gone").await;
    let fresh = completed_run(&server, &worker, "fresh").await;
    // No worker serves `waiting`: its run stays queued, and so does the event it refers to.
    let waiting = server.emit_runs("waiting.go", json!({})).await.remove(0);
    let url = server.url.clone();
    let old = ago(40);
    for (run, event) in [&old_a, &old_b] {
        raw_execute(
            &url,
            &format!("UPDATE runs SET created_at = '{old}', ended_at = '{old}' WHERE id = '{run}'"),
        )
        .await
        .expect("valid");
        raw_execute(
            &url,
            &format!("UPDATE events SET received_at = '{old}' WHERE id = '{event}'"),
        )
        .await
        .expect("valid");
    }
    raw_execute(&url, &format!("UPDATE events SET received_at = '{old}' WHERE id = (SELECT event_id FROM runs WHERE id = '{waiting}')")).await.expect("valid");
    raw_execute(
        &url,
        &format!(
            "INSERT INTO history (recorded_at, env_id, kind, payload) VALUES ('{old}', '{env}', 'test.old', '{{}}')"
        ),
    )
    .await
    .expect("an old history entry");
    let store = ironflow::store::open_with(&common::db_options(&url))
        .await
        .expect("store");

    // Keeping everything is the default: a pass removes nothing.
    let (status, setting) = server
        .get(&format!("/api/v1/environments/{env}/retention"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|s| (s, ()))
        .expect("get");
    assert_eq!((status, setting), (200, ()));
    let report = ironflow::engine::run_retention(&store, Ts::now())
        .await
        .expect("a pass");
    assert_eq!(report.removed.total(), 0, "{report:?}");

    // Bad settings are 400s naming the field; nothing changes.
    for bad in [json!(0), json!("30"), json!(1.5)] {
        let (status, body) = set_retention(&server, &env, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains("retention_days"), "{body}");
    }
    let (status, body) = set_retention(&server, &env, json!(30)).await;
    assert_eq!(
        (status, body["retention_days"].clone()),
        (200, json!(30)),
        "{body}"
    );
    let shown: Value = server
        .get_json(&format!("/api/v1/environments/{env}/retention"))
        .await;
    assert_eq!(shown["retention_days"], 30);

    let report = ironflow::engine::run_retention(&store, Ts::now())
        .await
        .expect("a pass");
    assert_eq!(report.removed.runs, 2, "{report:?}");
    assert_eq!(report.removed.steps, 2, "{report:?}");
    assert_eq!(report.removed.events, 2, "{report:?}");
    for (run, event) in [&old_a, &old_b] {
        let r = server
            .get(&format!("/api/v1/runs/{run}"))
            .send()
            .await
            .expect("get run");
        assert_eq!(r.status().as_u16(), 404, "expired run {run} is gone");
        assert_eq!(
            raw_count(
                &url,
                &format!("SELECT count(*) FROM steps WHERE run_id = '{run}'")
            )
            .await,
            0
        );
        assert_eq!(
            raw_count(
                &url,
                &format!("SELECT count(*) FROM events WHERE id = '{event}'")
            )
            .await,
            0
        );
    }
    assert_eq!(
        server.run_json(&fresh.0).await["status"],
        "completed",
        "a recent run stays"
    );
    assert_eq!(
        raw_count(
            &url,
            &format!("SELECT count(*) FROM events WHERE id = '{}'", fresh.1)
        )
        .await,
        1
    );
    assert_eq!(
        raw_count(&url, &format!("SELECT count(*) FROM events e JOIN runs r ON r.event_id = e.id WHERE r.id = '{waiting}'")).await,
        1,
        "an unfinished run and its (old) event stay"
    );
    let old_history = raw_count(&url, "SELECT count(*) FROM history WHERE kind = 'test.old'").await;
    match backend {
        // SQLite removes entries at the exact cutoff.
        Backend::Sqlite => assert_eq!(old_history, 0),
        // Postgres removes them a whole partition at a time: this one sits in the partition the
        // table before partitioning became, which has not wholly expired.
        Backend::Postgres => {
            assert_eq!(old_history, 1);
            assert_eq!(report.removed.history, 0);
        }
    }
    let fresh_history = raw_count(
        &url,
        &format!("SELECT count(*) FROM history WHERE run_id = '{}'", fresh.0),
    )
    .await;
    assert!(fresh_history > 0, "a recent run's history stays");
    assert!(
        raw_execute(
            &url,
            &format!("DELETE FROM history WHERE run_id = '{}'", fresh.0)
        )
        .await
        .is_err(),
        "the history still refuses deleting what has not expired"
    );
    // Back to keeping everything.
    let (status, body) = set_retention(&server, &env, Value::Null).await;
    assert_eq!((status, body["retention_days"].clone()), (200, Value::Null));
    store.close().await;
    server.stop().await;
}

both_backends! {
    expired_removed => expired_rows_are_removed_and_the_rest_kept;
}

/// The first instant of the month `offset` months from now (negative: before).
fn month_start(offset: i32) -> chrono::DateTime<chrono::Utc> {
    use chrono::{Datelike, TimeZone};
    let now = chrono::Utc::now();
    let months = now.year() * 12 + now.month0() as i32 + offset;
    chrono::Utc
        .with_ymd_and_hms(
            months.div_euclid(12),
            months.rem_euclid(12) as u32 + 1,
            1,
            0,
            0,
            0,
        )
        .single()
        .expect("the first of a month")
}

async fn partitions(url: &str) -> Vec<String> {
    let pool = common::pg_pool(url).await.expect("connect");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass('history') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("partitions");
    pool.close().await;
    names
}

/// The test's monthly entries of one environment.
async fn month_entries(url: &str, env: &str) -> i64 {
    raw_count(
        url,
        &format!("SELECT count(*) FROM history WHERE kind = 'test.month' AND env_id = '{env}'"),
    )
    .await
}

fn partition_name(start: chrono::DateTime<chrono::Utc>) -> String {
    format!("history_y{}", start.format("%Ym%m"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_drops_whole_expired_months_and_keeps_the_rest() {
    let server = TestServer::start(Backend::Postgres).await;
    let url = server.url.clone();
    let default = env_id(&server, "default").await;
    let (status, created) = server
        .post("/api/v1/environments")
        .json(&json!({"name": "staging"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map(|s| (s, ()))
        .expect("create");
    assert_eq!((status, created), (201, ()));
    let staging = env_id(&server, "staging").await;
    // A layout with past months (as a database partitioned months ago has): the partition the
    // table became is set aside, and the last four months get their own.
    raw_execute(
        &url,
        "ALTER TABLE history DETACH PARTITION history_before_partitioning",
    )
    .await
    .expect("detach");
    for offset in -4..=0 {
        let (from, to) = (month_start(offset), month_start(offset + 1));
        raw_execute(
            &url,
            &format!(
                "SELECT ironflow_create_history_partition('{}', '{}', '{}')",
                partition_name(from),
                from.to_rfc3339(),
                to.to_rfc3339()
            ),
        )
        .await
        .expect("a monthly partition");
    }
    // Two entries per environment in the middle of each past month.
    for offset in -4..0 {
        let mid = month_start(offset) + chrono::Duration::days(14);
        for env in [&default, &staging] {
            raw_execute(
                &url,
                &format!("INSERT INTO history (recorded_at, env_id, kind, payload) VALUES ('{}', '{env}', 'test.month', '{{}}'), ('{}', '{env}', 'test.month', '{{}}')", mid.to_rfc3339(), mid.to_rfc3339()),
            )
            .await
            .expect("entries");
        }
    }
    let store = ironflow::store::open_with(&common::db_options(&url))
        .await
        .expect("store");

    let horizon = chrono::Utc::now() - chrono::Duration::days(45);
    let expired: Vec<String> = (-4..0)
        .filter(|o| month_start(o + 1) <= horizon)
        .map(|o| partition_name(month_start(o)))
        .collect();
    assert!(!expired.is_empty());
    let n_expired = expired.len() as i64;

    // While staging keeps everything no partition is dropped: default's entries of the months
    // it has wholly expired are deleted instead, staging's stay.
    assert_eq!(set_retention(&server, &default, json!(45)).await.0, 200);
    let report = ironflow::engine::run_retention(&store, Ts::now())
        .await
        .expect("a pass");
    assert!(report.partitions_dropped.is_empty(), "{report:?}");
    assert_eq!(report.removed.history, 2 * n_expired as u64, "{report:?}");
    assert_eq!(month_entries(&url, &staging).await, 8);
    // The coming months' partitions are made ahead.
    let names = partitions(&url).await;
    for offset in 1..=2 {
        assert!(
            names.contains(&partition_name(month_start(offset))),
            "{names:?}"
        );
    }

    // Both keep 45 days: every month that ended more than 45 days ago is dropped whole.
    assert_eq!(set_retention(&server, &staging, json!(45)).await.0, 200);
    let report = ironflow::engine::run_retention(&store, Ts::now())
        .await
        .expect("a pass");
    assert_eq!(report.partitions_dropped, expired, "{report:?}");
    assert_eq!(report.removed.history, 0, "dropped, not deleted");
    let names = partitions(&url).await;
    for gone in &expired {
        assert!(!names.contains(gone), "{gone} dropped: {names:?}");
    }
    for kept in (-4..=2)
        .map(|o| partition_name(month_start(o)))
        .filter(|n| !expired.contains(n))
    {
        assert!(names.contains(&kept), "{kept} kept: {names:?}");
    }
    assert!(names.contains(&"history_default".to_owned()));
    let left = raw_count(
        &url,
        "SELECT count(*) FROM history WHERE kind = 'test.month'",
    )
    .await;
    assert_eq!(
        left,
        16 - 4 * n_expired,
        "the kept months' entries are all there"
    );

    // Staging keeps less: its entries of wholly expired months go by DELETE (the partition
    // stays for default's), default's stay.
    assert_eq!(set_retention(&server, &staging, json!(1)).await.0, 200);
    let report = ironflow::engine::run_retention(&store, Ts::now())
        .await
        .expect("a pass");
    assert!(report.partitions_dropped.is_empty());
    let staging_horizon = chrono::Utc::now() - chrono::Duration::days(1);
    let whole_past_months = (-4..0)
        .filter(|o| !expired.contains(&partition_name(month_start(*o))))
        .filter(|o| month_start(o + 1) <= staging_horizon)
        .count() as i64;
    assert_eq!(
        report.removed.history,
        2 * whole_past_months as u64,
        "{report:?}"
    );
    assert_eq!(month_entries(&url, &staging).await, 0);
    assert_eq!(month_entries(&url, &default).await, 2 * whole_past_months);
    store.close().await;
    server.stop().await;
}
