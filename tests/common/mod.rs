//! Test fixtures: a fresh real database per test (a SQLite file in a temp dir, or a new
//! Postgres database from `ironflow-testcontainers`) and an in-process server on a loopback port.

#![allow(dead_code)]

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

/// A migrated store on a fresh database.
pub async fn fresh_store(backend: Backend) -> (SharedStore, String, DbGuard) {
    let (url, guard) = fresh_database(backend).await;
    let store = server::open_store(&url)
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
    _guard: Arc<DbGuard>,
    _key_dir: tempfile::TempDir,
}

pub struct ServerConfig {
    pub dev: bool,
    pub max_payload_bytes: usize,
    pub lease_ttl: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            dev: false,
            max_payload_bytes: 1024 * 1024,
            lease_ttl: std::time::Duration::from_secs(90),
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, ServerConfig::default()).await
    }

    pub async fn start_with(backend: Backend, config: ServerConfig) -> Self {
        let (url, guard) = fresh_database(backend).await;
        let key_dir = tempfile::tempdir().expect("temp dir");
        let key_file = key_dir.path().join("admin.key");
        let options = ServeOptions {
            bind: "127.0.0.1".parse().expect("loopback"),
            port: 0,
            database_url: url.clone(),
            dev: config.dev,
            bootstrap_key_file: Some(key_file.clone()),
            max_payload_bytes: config.max_payload_bytes,
            lease_ttl: config.lease_ttl,
        };
        let server = server::start(options, None).await.expect("server starts");
        let key = std::fs::read_to_string(&key_file)
            .expect("bootstrap key written")
            .trim()
            .to_owned();
        Self {
            base: format!("http://{}", server.local_addr),
            key,
            server: Some(server),
            http: reqwest::Client::new(),
            url,
            _guard: Arc::new(guard),
            _key_dir: key_dir,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    /// A Connect JSON call; returns status and the JSON body.
    pub async fn connect_json(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .post(&format!("/ironflow.v1.IronflowService/{method}"))
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
        let pool = sqlx::PgPool::connect(url)
            .await
            .map_err(|e| e.to_string())?;
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
        let pool = sqlx::PgPool::connect(url).await.expect("connect");
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
