//! Test fixtures: a fresh real database per test (a SQLite file in a temp dir, or a new
//! Postgres database from `ironflow-testcontainers`) and an in-process server on a loopback port.

#![allow(dead_code)]

pub mod kv;
pub mod ws;

use std::sync::Arc;

use ironflow::server::{self, ServeOptions, Server};
use ironflow::store::{SharedStore, Store};
use ironflow_testcontainers::PgDatabase;

/// Keeps whatever backs a test database alive for the test's duration.
pub enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database: its URL and the guard that removes it afterwards.
pub async fn fresh_database(backend: Backend) -> (String, DbGuard) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = dir.path().join("ironflow.db").display().to_string();
            (url, DbGuard::Sqlite(dir))
        }
        Backend::Postgres => {
            let db = ironflow_testcontainers::postgres()
                .await
                .expect("a fresh Postgres database");
            (db.url().to_owned(), DbGuard::Postgres(db))
        }
    }
}

/// The Postgres schema the tests' servers use: `IRONFLOW_DB_SCHEMA`, the variable the binary
/// reads too (scripts/test.sh sets one for the Rust suites), else the server's default.
pub fn test_schema() -> String {
    std::env::var("IRONFLOW_DB_SCHEMA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| ironflow::store::pg_layout::DbSchema::default().to_string())
}

/// How the tests open a database: the URL with [`test_schema`].
pub fn db_options(url: &str) -> ironflow::store::DbOptions {
    let mut options = ironflow::store::DbOptions::url(url);
    options.postgres.schema =
        ironflow::store::pg_layout::DbSchema::parse(&test_schema()).expect("IRONFLOW_DB_SCHEMA");
    options
}

/// A direct pool on a test database, looking into [`test_schema`] first (as `psql` with
/// `SET search_path` would).
pub async fn pg_pool(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    use std::str::FromStr as _;
    let options =
        sqlx::postgres::PgConnectOptions::from_str(url)?.options([("search_path", test_schema())]);
    sqlx::PgPool::connect_with(options).await
}

/// A migrated store on a fresh database.
pub async fn fresh_store(backend: Backend) -> (SharedStore, String, DbGuard) {
    let (url, guard) = fresh_database(backend).await;
    let store = server::open_store(&db_options(&url))
        .await
        .expect("open and migrate store");
    (store, url, guard)
}

/// A running server on 127.0.0.1:<ephemeral> with its admin key.
pub struct TestServer {
    pub base: String,
    pub key: String,
    pub server: Option<Server>,
    pub http: reqwest::Client,
    pub url: String,
    /// The NATS server this node uses (KV and live fan-out); its other nodes use it too.
    pub nats_url: Option<String>,
    _guard: Arc<DbGuard>,
    _key_dir: tempfile::TempDir,
}

pub struct ServerConfig {
    pub dev: bool,
    pub max_payload_bytes: usize,
    pub lease_ttl: std::time::Duration,
    pub master_key: Option<ironflow::domain::secret::MasterKey>,
    /// KV in NATS JetStream at this URL instead of the database.
    pub nats_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            dev: false,
            max_payload_bytes: 1024 * 1024,
            lease_ttl: std::time::Duration::from_secs(90),
            master_key: None,
            nats_url: None,
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, ServerConfig::default()).await
    }

    pub async fn start_with(backend: Backend, config: ServerConfig) -> Self {
        let (url, guard) = fresh_database(backend).await;
        Self::start_on(db_options(&url), Arc::new(guard), config)
            .await
            .expect("server starts")
    }

    /// A server on an existing database opened with these options; the error when it refuses
    /// to start.
    pub async fn start_on(
        database: ironflow::store::DbOptions,
        guard: Arc<DbGuard>,
        config: ServerConfig,
    ) -> anyhow::Result<Self> {
        let key_dir = tempfile::tempdir().expect("temp dir");
        let key_file = key_dir.path().join("admin.key");
        let url = database.url.clone();
        let options = ServeOptions {
            bind: "127.0.0.1".parse().expect("loopback"),
            port: 0,
            database,
            dev: config.dev,
            bootstrap_key_file: Some(key_file.clone()),
            max_payload_bytes: config.max_payload_bytes,
            lease_ttl: config.lease_ttl,
            master_key: config.master_key.clone(),
            nats_url: config.nats_url.clone(),
            schema_enforcement: Default::default(),
            projection_lease_ttl: std::time::Duration::from_secs(15),
        };
        let server = server::start(options, None).await?;
        // A database that already had its admin key (a restart) writes none: the test gives it.
        let key = std::fs::read_to_string(&key_file)
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            base: format!("http://{}", server.local_addr),
            key,
            server: Some(server),
            http: reqwest::Client::new(),
            url,
            nats_url: config.nats_url,
            _guard: guard,
            _key_dir: key_dir,
        })
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// `GET path` with the admin key, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// A Connect JSON call to `ironflow.v1.IronflowService`; returns status and the JSON body.
    pub async fn connect_json(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.service_json("IronflowService", method, body).await
    }

    /// A Connect JSON call to `ironflow.v1.PubSubService`; returns status and the JSON body.
    pub async fn pubsub_json(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.service_json("PubSubService", method, body).await
    }

    /// A Connect JSON call to `ironflow.v1.<service>`; returns status and the JSON body.
    pub async fn service_json(
        &self,
        service: &str,
        method: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .post(&format!("/ironflow.v1.{service}/{method}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// `POST /api/v1/events` with `body`; returns status and the JSON body.
    pub async fn emit_json(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .post("/api/v1/events")
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Registers a function (Connect JSON `RegisterFunction`), asserting it was accepted.
    pub async fn register_function(&self, def: serde_json::Value) {
        let (status, body) = self.connect_json("RegisterFunction", def).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Emits an event over REST; returns the ids of the runs it started.
    pub async fn emit_runs(&self, name: &str, data: serde_json::Value) -> Vec<String> {
        let body: serde_json::Value = self
            .post("/api/v1/events")
            .json(&serde_json::json!({"name": name, "data": data}))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        body["run_ids"]
            .as_array()
            .expect("run_ids")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect()
    }

    /// `GET /api/v1/runs/{id}` as JSON.
    pub async fn run_json(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/api/v1/runs/{id}")).await
    }

    /// Another node on this server's database (Postgres) and NATS, reachable with the same key.
    pub async fn second_node(&self) -> Server {
        let options = ServeOptions {
            bind: "127.0.0.1".parse().expect("loopback"),
            port: 0,
            database: db_options(&self.url),
            dev: false,
            bootstrap_key_file: None,
            max_payload_bytes: 1 << 20,
            lease_ttl: std::time::Duration::from_secs(90),
            master_key: None,
            nats_url: self.nats_url.clone(),
            schema_enforcement: Default::default(),
            projection_lease_ttl: std::time::Duration::from_secs(15),
        };
        server::start(options, None)
            .await
            .expect("second node starts")
    }

    /// Stops the server; the database stays until this value is dropped.
    pub async fn stop_keeping_database(mut self) -> Arc<DbGuard> {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
            server.wait().await.expect("server stops cleanly");
        }
        self._guard.clone()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
            server.wait().await.expect("server stops cleanly");
        }
    }
}

/// Runs one async test body against both backends, as two separate tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident => $body:ident;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$body($crate::common::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$body($crate::common::Backend::Postgres).await;
                }
            }
        )+
    };
}

pub fn _assert_store_object_safe(_: &dyn Store) {}

/// Runs one SQL statement directly on the test database (as a user with psql/sqlite3 would).
pub async fn raw_execute(url: &str, sql: &str) -> Result<u64, String> {
    if url.starts_with("postgres") {
        let pool = pg_pool(url).await.map_err(|e| e.to_string())?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string());
        pool.close().await;
        result.map(|r| r.rows_affected())
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
            .await
            .map_err(|e| e.to_string())?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .map_err(|e| e.to_string());
        pool.close().await;
        result.map(|r| r.rows_affected())
    }
}

/// Counts rows with a scalar query run directly on the test database.
pub async fn raw_count(url: &str, sql: &str) -> i64 {
    if url.starts_with("postgres") {
        let pool = pg_pool(url).await.expect("connect");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .expect("count query");
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
            .await
            .expect("connect");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&pool)
            .await
            .expect("count query");
        pool.close().await;
        n
    }
}

/// A pull worker speaking the REST protocol directly, for protocol-level tests.
pub struct FakeWorker {
    pub base: String,
    pub key: String,
    pub id: String,
    pub http: reqwest::Client,
}

impl FakeWorker {
    pub async fn register(server: &TestServer, id: &str, functions: &[&str]) -> Self {
        Self::register_at(&server.base, &server.key, id, functions).await
    }

    pub async fn register_at(base: &str, key: &str, id: &str, functions: &[&str]) -> Self {
        let worker = Self {
            base: base.to_owned(),
            key: key.to_owned(),
            id: id.to_owned(),
            http: reqwest::Client::new(),
        };
        let r = worker
            .http
            .post(format!("{base}/api/v1/workers/{id}/register"))
            .bearer_auth(key)
            .json(&serde_json::json!({"worker_id": id, "hostname": "test", "function_ids": functions, "max_concurrent_jobs": 10}))
            .send()
            .await
            .expect("register sent");
        assert_eq!(r.status(), 200);
        worker
    }

    /// Polls once; returns the jobs (empty on 204).
    pub async fn poll(&self, available: u32, wait_secs: u32) -> Vec<serde_json::Value> {
        let r = self
            .http
            .get(format!(
                "{}/api/v1/workers/{}/jobs?available={available}&wait={wait_secs}",
                self.base, self.id
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("poll sent");
        match r.status().as_u16() {
            204 => vec![],
            200 => r.json::<serde_json::Value>().await.expect("json")["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            other => panic!(
                "poll answered {other}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }

    /// Polls until at least one job arrives (each poll is held by the server).
    pub async fn next_job(&self) -> serde_json::Value {
        for _ in 0..10 {
            if let Some(job) = self.poll(1, 5).await.into_iter().next() {
                return job;
            }
        }
        panic!("no job arrived within 50 s");
    }

    pub async fn ack(&self, job: &serde_json::Value) -> u16 {
        self.http
            .put(format!("{}/api/v1/workers/{}/jobs/{}/ack", self.base, self.id, job["job_id"].as_str().expect("job_id")))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({"run_id": job["run_id"], "execution_seq": job["execution_seq"], "lease_token": job["lease_token"]}))
            .send()
            .await
            .expect("ack sent")
            .status()
            .as_u16()
    }

    /// Heartbeats with the jobs this worker still runs; returns the status.
    pub async fn heartbeat(&self, job_ids: &[String]) -> u16 {
        let jobs: Vec<serde_json::Value> = job_ids
            .iter()
            .map(|j| serde_json::json!({"job_id": j}))
            .collect();
        self.http
            .post(format!(
                "{}/api/v1/workers/{}/heartbeat",
                self.base, self.id
            ))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({"jobs": jobs}))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }

    /// Sends a report; `outcome` holds `status` and its fields. Returns status and body.
    pub async fn report(
        &self,
        job: &serde_json::Value,
        mut outcome: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        outcome["execution_seq"] = job["execution_seq"].clone();
        outcome["lease_token"] = job["lease_token"].clone();
        if outcome.get("steps").is_none() {
            outcome["steps"] = serde_json::json!([]);
        }
        if outcome.get("step_offset").is_none() {
            outcome["step_offset"] = job["step_sequence_base"].clone();
        }
        let r = self
            .http
            .put(format!(
                "{}/api/v1/workers/{}/jobs/{}",
                self.base,
                self.id,
                job["job_id"].as_str().expect("job_id")
            ))
            .bearer_auth(&self.key)
            .json(&outcome)
            .send()
            .await
            .expect("report sent");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// A completed `step.run` entry as the SDK reports it.
pub fn step_entry(run_id: &str, name: &str, output: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{run_id}:{name}:0"), "name": name, "type": "invoke", "status": "completed",
        "output": output, "started_at": "2026-01-01T00:00:00.000Z", "ended_at": "2026-01-01T00:00:00.001Z",
        "duration_ms": 1,
    })
}

/// An admin key of a second project (with its own `default` environment) in the server's
/// organisation, made through the administration API: a caller that must see nothing of ours.
pub async fn foreign_project_key(server: &TestServer) -> String {
    foreign_project(server, "admin").await.1
}

/// A second project and a key of it with `role`: (project id, key secret).
pub async fn foreign_project(server: &TestServer, role: &str) -> (String, String) {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let http = reqwest::Client::new();
    let project: serde_json::Value = http
        .post(format!("{}/api/v1/projects", server.base))
        .bearer_auth(&server.key)
        .json(&serde_json::json!({"name": format!("other-{suffix}")}))
        .send()
        .await
        .expect("project created")
        .json()
        .await
        .expect("project json");
    let project_id = project["id"].as_str().expect("project id").to_owned();
    let key = server
        .create_key(
            serde_json::json!({"name": "foreign", "project_id": project_id, "role_ids": [role]}),
        )
        .await;
    (project_id, key["key"].as_str().expect("secret").to_owned())
}

impl TestServer {
    /// A key made with `POST /api/v1/apikeys` (by the admin key): the answer, secret in `key`.
    pub async fn create_key(&self, body: serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/apikeys", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("key created");
        assert_eq!(response.status(), 201, "creating a key with {body}");
        response.json().await.expect("key json")
    }
}

/// Row counts of every table of the database (migrations bookkeeping, `workers`, whose
/// heartbeat timestamps move on their own, and the audit log excluded): two equal snapshots mean nothing was
/// written in between.
pub async fn table_counts(url: &str) -> std::collections::BTreeMap<String, i64> {
    // The audit log records refusals (that is its job); every other table must not move. One
    // statement counts them all (a snapshot per route must stay cheap).
    fn counts_sql(names: &[String]) -> String {
        assert!(
            !names.is_empty(),
            "no tables found: the snapshot would prove nothing"
        );
        names
            .iter()
            .filter(|name| {
                !(name.starts_with("_sqlx") || *name == "workers" || *name == "audit_log")
            })
            .map(|name| format!("SELECT '{name}' AS name, count(*) AS n FROM \"{name}\""))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }
    let rows: Vec<(String, i64)> = if url.starts_with("postgres") {
        // Partitioned tables once (the history's monthly partitions are counted in it).
        let tables = "SELECT c.relname::text AS name FROM pg_class c \
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') \
               AND NOT c.relispartition";
        let pool = pg_pool(url).await.expect("connect");
        let names: Vec<String> = sqlx::query_scalar(tables)
            .fetch_all(&pool)
            .await
            .expect("tables");
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(counts_sql(&names)))
            .fetch_all(&pool)
            .await
            .expect("counts");
        pool.close().await;
        rows
    } else {
        let tables =
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'";
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}"))
            .await
            .expect("connect");
        let names: Vec<String> = sqlx::query_scalar(tables)
            .fetch_all(&pool)
            .await
            .expect("tables");
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(counts_sql(&names)))
            .fetch_all(&pool)
            .await
            .expect("counts");
        pool.close().await;
        rows
    };
    rows.into_iter().collect()
}

/// Polls `check` until it returns `Some`, at most `within`; panics naming `what` otherwise.
/// For conditions that come true asynchronously (a run ending, a lease expiring).
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A route pattern with every `{param}` replaced by `value`.
pub fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        out.push_str(value);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// The services (`ironflow.v1.<Name>`) and methods of our proto files, with whether each
/// streams.
pub fn connect_methods() -> Vec<(String, String, bool)> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(ironflow::proto::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                let streaming = method.client_streaming() || method.server_streaming();
                methods.push((full.clone(), method.name().to_owned(), streaming));
            }
        }
    }
    methods
}

/// Bootstraps tenancy on a fresh store and returns its default environment.
pub async fn default_env(store: &ironflow::store::SharedStore) -> ironflow::ids::EnvId {
    ironflow::tenancy::bootstrap(store)
        .await
        .expect("bootstrap");
    store
        .default_environment()
        .await
        .expect("query")
        .expect("default env exists")
        .id
}
