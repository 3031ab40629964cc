//! Postgres as its users run it: a schema of its own next to an application's tables, an
//! earlier release's layout in `public` moved, and `serve` as a role with DML rights only.
//! (Postgres-only by nature: SQLite has no schemas or roles.)

mod common;

use std::sync::Arc;

use common::{
    Backend, FakeWorker, ServerConfig, TestServer, db_options, fresh_database, raw_count,
    raw_execute, test_schema,
};
use serde_json::{Value, json};

/// The relations (and their kinds) in `public`.
async fn public_relations(url: &str) -> Vec<(String, String)> {
    let pool = common::pg_pool(url).await.expect("connect");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("relations");
    pool.close().await;
    rows
}

/// Functions in `public`.
async fn public_functions(url: &str) -> Vec<String> {
    let pool = common::pg_pool(url).await.expect("connect");
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("functions");
    pool.close().await;
    rows
}

/// `ExecuteSQL` through the server: the first value of the first row, as text.
async fn sql_scalar(server: &TestServer, query: &str) -> String {
    let (status, body) = server
        .service_json("QueryService", "ExecuteSQL", json!({ "query": query }))
        .await;
    assert_eq!(status, 200, "{body}");
    match &body["rows"][0]["values"][0] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Runs one event's function to completion with a REST pull worker.
async fn run_one(server: &TestServer, function: &str) -> String {
    server
        .register_function(
            json!({"id": function, "triggers": [{"event": format!("{function}.go")}]}),
        )
        .await;
    let worker = FakeWorker::register(server, &format!("w-{function}"), &[function]).await;
    let run_id = server
        .emit_runs(&format!("{function}.go"), json!({"n": 1}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    assert_eq!(worker.ack(&job).await, 200);
    let (status, body) = worker
        .report(&job, json!({"status": "completed", "output": {"ok": true}}))
        .await;
    assert_eq!(status, 200, "{body}");
    common::eventually(
        "the run completes",
        std::time::Duration::from_secs(10),
        || async {
            let run = server.run_json(&run_id).await;
            (run["status"] == "completed").then_some(())
        },
    )
    .await;
    run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_events_runs_and_jobs_in_public_are_left_alone() {
    let (url, guard) = fresh_database(Backend::Postgres).await;
    raw_execute(
        &url,
        "CREATE TABLE public.events (id serial PRIMARY KEY, body text NOT NULL); \
         CREATE TABLE public.runs (id int PRIMARY KEY, state text); \
         CREATE TABLE public.jobs (name text); \
         INSERT INTO public.events (body) VALUES ('signup'); \
         INSERT INTO public.runs VALUES (7, 'theirs'); \
         INSERT INTO public.jobs VALUES ('nightly');",
    )
    .await
    .expect("the application's tables");
    let before = public_relations(&url).await;

    let server = TestServer::start_on(db_options(&url), Arc::new(guard), ServerConfig::default())
        .await
        .expect("starts next to the application's tables");
    let run_id = run_one(&server, "greet").await;

    assert_eq!(
        public_relations(&url).await,
        before,
        "nothing of ours in public"
    );
    assert!(public_functions(&url).await.is_empty());
    for (check, what) in [
        (
            "SELECT count(*) FROM public.events WHERE body = 'signup'",
            "their event",
        ),
        (
            "SELECT count(*) FROM public.runs WHERE id = 7 AND state = 'theirs'",
            "their run",
        ),
        (
            "SELECT count(*) FROM public.jobs WHERE name = 'nightly'",
            "their job",
        ),
    ] {
        assert_eq!(raw_count(&url, check).await, 1, "{what} is untouched");
    }
    assert_eq!(
        raw_count(&url, "SELECT count(*) FROM public.events").await,
        1
    );
    let schema = test_schema();
    assert_eq!(
        raw_count(
            &url,
            &format!("SELECT count(*) FROM {schema}.runs WHERE id = '{run_id}'")
        )
        .await,
        1,
        "our run is in {schema}.runs"
    );
    // The documented views read ours, not theirs.
    assert_eq!(
        sql_scalar(&server, "SELECT count(*) FROM ironflow_events").await,
        "1"
    );
    assert_eq!(
        sql_scalar(&server, "SELECT status FROM ironflow_runs").await,
        "completed"
    );
    server.stop().await;
}

/// The layout releases before the schema option left: migrations 1–12 and the views, in public.
async fn earlier_release_layout(url: &str) {
    use std::str::FromStr as _;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .expect("url")
        .options([("search_path", "public")]);
    let pool = sqlx::PgPool::connect_with(options).await.expect("connect");
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/postgres"
    )))
    .await
    .expect("migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 12)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator
        .run(&pool)
        .await
        .expect("the earlier release's migrations");
    sqlx::raw_sql(include_str!("../sql/postgres/views.sql"))
        .execute(&pool)
        .await
        .expect("its views");
    // What it had stored: events and their history.
    sqlx::raw_sql(
        "INSERT INTO events (id, env_id, name, data, metadata, source, received_at) \
         SELECT 'legacy-' || i, 'legacy-env', 'legacy.happened', jsonb_build_object('i', i), '{}', 'api', now() \
         FROM generate_series(1, 5) i; \
         INSERT INTO history (env_id, kind, event_id, payload) \
         SELECT 'legacy-env', 'event.received', 'legacy-' || i, '{}' FROM generate_series(1, 5) i;",
    )
    .execute(&pool)
    .await
    .expect("its data");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_release_in_public_moves_into_the_schema() {
    let (url, guard) = fresh_database(Backend::Postgres).await;
    earlier_release_layout(&url).await;
    let names: Vec<String> = public_relations(&url)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(names.contains(&"history".to_owned()) && names.contains(&"ironflow_runs".to_owned()));

    let server = TestServer::start_on(db_options(&url), Arc::new(guard), ServerConfig::default())
        .await
        .expect("the move");
    let relations = public_relations(&url).await;
    assert!(relations.is_empty(), "public still holds {relations:?}");
    assert!(
        public_functions(&url).await.is_empty(),
        "functions moved too"
    );
    let schema = test_schema();
    assert_eq!(
        raw_count(
            &url,
            &format!("SELECT count(*) FROM {schema}.events WHERE name = 'legacy.happened'")
        )
        .await,
        5,
        "the events came along"
    );
    assert_eq!(
        raw_count(
            &url,
            &format!("SELECT count(*) FROM {schema}.history WHERE env_id = 'legacy-env'")
        )
        .await,
        5,
        "and their history"
    );
    // The append-only rule moved with its table.
    let refused = raw_execute(
        &url,
        &format!("DELETE FROM {schema}.history WHERE env_id = 'legacy-env'"),
    )
    .await;
    assert!(refused.is_err(), "history is still append-only");
    // New work lands in the schema, and the README's views answer.
    let run_id = run_one(&server, "after").await;
    assert!(public_relations(&url).await.is_empty());
    assert_eq!(
        sql_scalar(
            &server,
            &format!("SELECT status FROM ironflow_runs WHERE run_id = '{run_id}'")
        )
        .await,
        "completed"
    );
    server.stop().await;
}

/// The documented grants for a serving role (README, "Running on Postgres").
fn documented_grants(schema: &str, role: &str) -> String {
    format!(
        "GRANT USAGE ON SCHEMA {schema} TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}; \
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {role};"
    )
}

/// Why a server on `url` refuses to start (it must).
async fn refusal(url: &str, guard: &Arc<common::DbGuard>) -> String {
    let refused = TestServer::start_on(db_options(url), guard.clone(), ServerConfig::default())
        .await
        .err()
        .expect("the server refuses to start");
    format!("{refused:#}")
}

/// The URL as another role.
fn as_role(url: &str, role: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("url");
    parsed.set_username(role).expect("user");
    parsed.set_password(None).expect("password");
    parsed.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_as_a_role_with_only_the_documented_grants() {
    let (url, guard) = fresh_database(Backend::Postgres).await;
    let guard = Arc::new(guard);
    let schema = test_schema();
    // The schema's owner migrates.
    ironflow::server::open_store(&db_options(&url))
        .await
        .expect("migrate as the owner")
        .close()
        .await;
    let role = format!("ifapp_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    raw_execute(
        &url,
        &format!(
            "CREATE ROLE {role} LOGIN; {}",
            documented_grants(&schema, &role)
        ),
    )
    .await
    .expect("a DML-only role");
    let may_create = raw_count(
        &url,
        &format!(
            "SELECT (has_schema_privilege('{role}', '{schema}', 'CREATE') \
             OR has_database_privilege('{role}', current_database(), 'CREATE'))::int::int8"
        ),
    )
    .await;
    assert_eq!(may_create, 0, "the role may create nothing");

    let server = TestServer::start_on(
        db_options(&as_role(&url, &role)),
        guard.clone(),
        ServerConfig::default(),
    )
    .await
    .expect("serves with DML rights only");
    run_one(&server, "least").await;
    let status = server
        .post("/api/v1/kv/buckets")
        .json(&json!({"name": "prefs"}))
        .send()
        .await
        .expect("kv bucket")
        .status();
    assert!(status.is_success(), "{status}");
    assert_eq!(
        sql_scalar(&server, "SELECT count(*) FROM ironflow_runs").await,
        "1",
        "history queries run (as the server's role without the reader role)"
    );
    // Retention's partition upkeep runs as this role too (through the owner's functions).
    let as_app = ironflow::store::open_with(&db_options(&as_role(&url, &role)))
        .await
        .expect("store as the role");
    ironflow::engine::run_retention(&as_app, ironflow::domain::time::Ts::now())
        .await
        .expect("a retention pass as the role");
    as_app.close().await;
    let ahead = raw_count(
        &url,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass('history') AND c.relname ~ '^history_y'",
    )
    .await;
    assert_eq!(ahead, 2, "the next two months' partitions exist");
    server.stop().await;

    // One right less: serve says which, and how to grant it.
    raw_execute(
        &url,
        &format!("REVOKE INSERT ON {schema}.events FROM {role}"),
    )
    .await
    .expect("revoke");
    let said = refusal(&as_role(&url, &role), &guard).await;
    assert!(
        said.contains(&format!("role {role} lacks INSERT on {schema}.events"))
            && said.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"),
        "{said}"
    );

    // A migration this role may not apply: the error names who can.
    raw_execute(&url, &format!("GRANT INSERT ON {schema}.events TO {role}; DELETE FROM {schema}._sqlx_migrations WHERE version = (SELECT max(version) FROM {schema}._sqlx_migrations)"))
        .await
        .expect("pretend a migration is pending");
    let said = refusal(&as_role(&url, &role), &guard).await;
    assert!(
        said.contains("needs 1 migrations applied") && said.contains("ironflow migrate"),
        "{said}"
    );
    raw_execute(&url, &format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .expect("drop the role");
}

/// The server's own certificate file, when it serves TLS (Debian's default: the snake-oil
/// certificate, self-signed for `localhost`).
async fn server_certificate(url: &str) -> String {
    let pool = common::pg_pool(url).await.expect("connect");
    let (ssl, file): (String, String) =
        sqlx::query_as("SELECT current_setting('ssl'), current_setting('ssl_cert_file')")
            .fetch_one(&pool)
            .await
            .expect("ssl settings");
    pool.close().await;
    assert_eq!(ssl, "on", "the test Postgres serves TLS (Debian's default)");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_with_a_ca_file_and_a_named_pool() {
    let (url, _guard) = fresh_database(Backend::Postgres).await;
    let certificate = server_certificate(&url).await;
    let mut tls = reqwest::Url::parse(&url).expect("url");
    tls.set_host(Some("localhost")).expect("host");
    tls.set_query(Some("sslmode=verify-full"));
    let name = format!(
        "ironflow-tls-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );

    // Without the CA the server's certificate is refused, and the error says so.
    let mut untrusted = db_options(tls.as_str());
    untrusted.postgres.application_name = name.clone();
    let refused = ironflow::server::open_store(&untrusted)
        .await
        .err()
        .expect("an unknown issuer is refused");
    assert!(
        format!("{refused:#}").contains("certificate"),
        "{refused:#}"
    );

    let mut options = untrusted.clone();
    options.postgres.ca_file = Some(certificate.into());
    options.postgres.pool_size = 3;
    let store = ironflow::server::open_store(&options)
        .await
        .expect("verify-full with the CA file");
    let encrypted = raw_count(
        &url,
        &format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = '{name}' AND s.ssl"
        ),
    )
    .await;
    assert!(
        encrypted >= 1,
        "the store's connections are TLS and carry their name"
    );
    store.close().await;
}

/// A rolling upgrade on one Postgres: nodes are replaced one at a time while the others serve,
/// a newer release's additive migration leaves a running node of the older one serving, and a
/// node of the older release started after it refuses, naming the versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_keeps_serving() {
    let first = TestServer::start(Backend::Postgres).await;
    let url = first.url.clone();
    let second = first.second_node().await;
    let second_base = format!("http://{}", second.local_addr);
    run_one(&first, "before").await;

    // The first node is replaced (stopped, started again) while the second serves.
    let key = first.key.clone();
    let guard = first.stop_keeping_database().await;
    let mut via_second =
        TestServer::start_on(db_options(&url), guard.clone(), ServerConfig::default())
            .await
            .expect("a replacement node");
    via_second.key = key.clone();
    run_one(&via_second, "during").await;
    let worker = FakeWorker::register_at(&second_base, &key, "w-second", &["during"]).await;
    let run = via_second
        .emit_runs("during.go", json!({"n": 2}))
        .await
        .remove(0);
    let job = worker.next_job().await;
    assert_eq!(
        job["run_id"],
        run.as_str(),
        "the node that stayed dispatches too"
    );

    // A newer release's first node migrates (additively) ...
    let schema = test_schema();
    raw_execute(
        &url,
        &format!(
            "CREATE TABLE {schema}.from_the_next_release (id TEXT PRIMARY KEY); \
             ALTER TABLE {schema}.runs ADD COLUMN next_release_note TEXT; \
             INSERT INTO {schema}._sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'the next release', true, '\\x00'::bytea, 0)"
        ),
    )
    .await
    .expect("the next release's migration");
    // ... and the running nodes of this one keep serving on the migrated schema.
    run_one(&via_second, "after").await;
    // A node of this release started now refuses the newer schema, saying which it found.
    let said = refusal(&url, &guard).await;
    assert!(
        said.contains("99990101000000") && said.contains("newer than this binary"),
        "{said}"
    );
    second.shutdown.cancel();
    second.wait().await.expect("the second node stops");
    via_second.stop().await;
}
