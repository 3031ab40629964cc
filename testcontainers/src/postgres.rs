//! Fresh Postgres databases, either on the server named by
//! `IRONFLOW_TEST_DATABASE_URL` or on a throwaway per-process cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::process::{
    Watchdog, find_in_path, free_port, is_executable, path_str, running_as_root, sh_quote,
    unique_temp_dir, user_exists,
};

/// Environment variable naming an admin connection URL of an existing server.
const DATABASE_URL_ENV: &str = "IRONFLOW_TEST_DATABASE_URL";

/// How long to wait for one admin operation (connect, create, drop).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh, empty Postgres database that exists for as long as this handle.
///
/// Dropping the handle drops the database (`DROP DATABASE ... WITH (FORCE)`,
/// which also disconnects remaining sessions). That happens synchronously on a
/// helper thread with its own runtime, so it works in any context, including
/// while a panicking test unwinds. Use [`PgDatabase::drop_database`] to drop it
/// asynchronously and observe errors.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
    admin_url: String,
    dropped: bool,
    /// Drops the database if the process dies without running `Drop` (only
    /// for an external server, and only if `psql` is available).
    watchdog: Option<Watchdog>,
}

/// Creates a fresh, empty database named `ironflow_test_<uuid>`.
///
/// The database lives on the server named by `IRONFLOW_TEST_DATABASE_URL` if
/// that is set, otherwise on a throwaway cluster started once per process (see
/// the crate documentation).
pub async fn postgres() -> Result<PgDatabase> {
    let (admin_url, external) = admin_url().await?;
    create_database(admin_url, external).await
}

impl PgDatabase {
    /// A full `postgres://` connection URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (`ironflow_test_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now, disconnecting any remaining sessions.
    pub async fn drop_database(mut self) -> Result<()> {
        self.dropped = true;
        let result = drop_database(&self.admin_url, &self.name).await;
        self.settle_watchdog(result.is_ok());
        result
    }

    /// After a successful drop the watchdog has nothing left to do; after a
    /// failed one, let it try once more.
    fn settle_watchdog(&mut self, dropped: bool) {
        // Dropping an armed watchdog makes it run its cleanup right away.
        match self.watchdog.take() {
            Some(watchdog) if dropped => watchdog.disarm(),
            armed => drop(armed),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await, and may run inside or outside a Tokio runtime:
        // do the work on a fresh thread with its own runtime and wait for it,
        // so that the database is gone before the test (process) ends.
        let worker = std::thread::Builder::new()
            .name("ironflow-drop-test-db".to_owned())
            .spawn(move || -> Result<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a runtime to drop the test database")?
                    .block_on(drop_database(&admin_url, &name))
            });
        let outcome = match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the drop thread panicked"))),
            Err(err) => Err(err).context("spawning a thread to drop the test database"),
        };
        self.settle_watchdog(outcome.is_ok());
        if let Err(err) = outcome {
            eprintln!(
                "ironflow-testcontainers: failed to drop test database {}: {err:#}",
                self.name
            );
        }
    }
}

/// The admin URL of the server to create test databases on, and whether that
/// is an external server (from the environment) rather than the local cluster.
async fn admin_url() -> Result<(&'static str, bool)> {
    static FROM_ENV: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| {
        std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.trim().is_empty())
    });
    match from_env {
        Some(url) => Ok((url.as_str(), true)),
        None => Ok((local_cluster().await?.admin_url.as_str(), false)),
    }
}

/// Creates a uniquely named database on the server behind `admin_url`.
///
/// On an `external` server, a watchdog drops the database again with `psql`
/// (if available) should the process die without dropping the handle, e.g.
/// when a test runner kills it on timeout. A local cluster disappears with the
/// process anyway.
async fn create_database(admin_url: &str, external: bool) -> Result<PgDatabase> {
    let name = format!("ironflow_test_{}", uuid::Uuid::new_v4().simple());
    let url = database_url(admin_url, &name)?;
    // Armed before creating, so there is no window in which a killed process
    // leaks the database; if creation fails it fires harmlessly (IF EXISTS).
    let watchdog = match find_pg_binary("psql") {
        Some(psql) if external => Some(Watchdog::spawn(
            r#""$1" -X -q -w -d "$2" -c "DROP DATABASE IF EXISTS \"$3\" WITH (FORCE)" >/dev/null 2>&1"#,
            &[psql.as_os_str(), admin_url.as_ref(), name.as_ref()],
        )?),
        _ => None,
    };
    let sql = format!("CREATE DATABASE {}", quote_ident(&name));
    with_timeout("creating the test database", async {
        let mut conn = connect(admin_url, Duration::ZERO).await?;
        execute_with_retry(&mut conn, &sql).await?;
        conn.close().await.context("closing the admin connection")
    })
    .await
    .with_context(|| format!("creating test database {name}"))?;
    Ok(PgDatabase {
        name,
        url,
        admin_url: admin_url.to_owned(),
        dropped: false,
        watchdog,
    })
}

/// Drops database `name` on the server behind `admin_url`, if it exists.
async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    with_timeout("dropping the test database", async {
        let mut conn = connect(admin_url, Duration::ZERO).await?;
        let force = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
        match execute_with_retry(&mut conn, &force).await {
            Ok(()) => {}
            // Before PostgreSQL 13 there is no WITH (FORCE): disconnect the
            // sessions by hand, then drop.
            Err(err) if sqlstate(&err).as_deref() == Some("42601") => {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(name)
                .execute(&mut conn)
                .await
                .context("disconnecting sessions from the test database")?;
                let plain = format!("DROP DATABASE IF EXISTS {}", quote_ident(name));
                execute_with_retry(&mut conn, &plain).await?;
            }
            Err(err) => return Err(err.into()),
        }
        conn.close().await.context("closing the admin connection")
    })
    .await
    .with_context(|| format!("dropping test database {name}"))
}

/// Runs `sql`, retrying errors caused by concurrent sessions, e.g. "source
/// database "template1" is being accessed by other users".
async fn execute_with_retry(conn: &mut PgConnection, sql: &str) -> sqlx::Result<()> {
    let mut delay = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        match sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if attempts < 20 && is_transient(&err) => {
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Connects to `url`, retrying transient failures ("too many clients", "the
/// database system is starting up"), and connection errors for up to
/// `io_patience` (while a freshly started server comes up).
async fn connect(url: &str, io_patience: Duration) -> Result<PgConnection> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        let err = match PgConnection::connect(url).await {
            Ok(conn) => return Ok(conn),
            Err(err) => err,
        };
        let retry = match err {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => started.elapsed() < io_patience,
            _ => is_transient(&err) && started.elapsed() < OPERATION_TIMEOUT,
        };
        if !retry {
            return Err(err).with_context(|| format!("connecting to {}", redact(url)));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

async fn with_timeout<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, fut)
        .await
        .with_context(|| format!("{what} timed out after {OPERATION_TIMEOUT:?}"))?
}

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

fn is_transient(err: &sqlx::Error) -> bool {
    matches!(
        sqlstate(err).as_deref(),
        // object_in_use, too_many_connections, cannot_connect_now,
        // serialization_failure, deadlock_detected
        Some("55006" | "53300" | "57P03" | "40001" | "40P01")
    )
}

/// Quotes a Postgres identifier.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `admin_url` with its database replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> Result<String> {
    let mut url = url::Url::parse(admin_url).with_context(|| {
        format!(
            "{DATABASE_URL_ENV} is not a valid URL: {}",
            redact(admin_url)
        )
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!(
            "{DATABASE_URL_ENV} must be a postgres:// URL, got {}",
            redact(admin_url)
        );
    }
    url.set_path(&format!("/{name}"));
    // A `dbname` query parameter would override the path.
    let query: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != "dbname")
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    if query.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(query);
    }
    Ok(url.into())
}

/// `url` without its password, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.into()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// A throwaway cluster shared by all tests of this process.
struct LocalCluster {
    admin_url: String,
    _cluster: PgCluster,
}

async fn local_cluster() -> Result<&'static LocalCluster> {
    static CLUSTER: OnceCell<LocalCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_try_init(|| async {
            let cluster = PgCluster::start(ClusterDurability::Fast).await?;
            Ok::<_, anyhow::Error>(LocalCluster {
                admin_url: cluster.admin_url().to_owned(),
                _cluster: cluster,
            })
        })
        .await
        .with_context(|| {
            format!(
                "starting a throwaway Postgres cluster \
                 (set {DATABASE_URL_ENV} to use an existing server instead)"
            )
        })
}

/// How a throwaway cluster treats commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDurability {
    /// `fsync`, `synchronous_commit` and `full_page_writes` off: fast, for tests that never
    /// stop the server under load.
    Fast,
    /// `synchronous_commit = on` (what production runs): a commit the server acknowledged
    /// survives the cluster being killed and restarted. `fsync` stays off: the machine itself
    /// does not crash in a test.
    Durable,
}

/// How a cluster is stopped on [`PgCluster::restart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// `pg_ctl -m fast`: sessions are terminated, a clean shutdown.
    Fast,
    /// `pg_ctl -m immediate`: the server processes are killed and the restart recovers from
    /// the WAL, as after a crash.
    Immediate,
}

/// A Postgres cluster of its own (`initdb` + `pg_ctl` on a free loopback port), for tests
/// that restart or kill the database server. Stopped and removed when dropped, or by a
/// watchdog when the process dies.
#[derive(Debug)]
pub struct PgCluster {
    admin_url: String,
    port: u16,
    dir: PathBuf,
    data: String,
    log: String,
    options: String,
    pg_ctl: PathBuf,
    run_as: RunAs,
    _watchdog: Watchdog,
}

impl PgCluster {
    /// Creates and starts a fresh cluster.
    pub async fn start(durability: ClusterDurability) -> Result<Self> {
        start_cluster(durability).await
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log (`pg_ctl -l`), which outlives restarts.
    pub fn log_path(&self) -> &Path {
        Path::new(&self.log)
    }

    /// A fresh database on this cluster (dropped with the handle).
    pub async fn database(&self) -> Result<PgDatabase> {
        create_database(&self.admin_url, false).await
    }

    /// Stops the server (as `mode` says) and starts it again on the same port; returns once it
    /// accepts connections.
    pub async fn restart(&self, mode: RestartMode) -> Result<()> {
        let mode = match mode {
            RestartMode::Fast => "fast",
            RestartMode::Immediate => "immediate",
        };
        self.run_as
            .run(
                &self.dir,
                &self.pg_ctl,
                &[
                    "restart",
                    "-D",
                    &self.data,
                    "-l",
                    &self.log,
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &self.options,
                ],
            )
            .await
            .with_context(|| format!("restarting the cluster ({mode})"))?;
        let conn = connect(&self.admin_url, Duration::from_secs(30)).await?;
        conn.close().await.context("closing the admin connection")
    }
}

/// How to run the Postgres tools: directly, or as the `postgres` user because
/// `initdb` and `pg_ctl` refuse to run as root.
#[derive(Debug, Clone, Copy)]
enum RunAs {
    CurrentUser,
    Runuser,
    Su,
}

impl RunAs {
    fn detect() -> Result<Self> {
        if !running_as_root()? {
            return Ok(Self::CurrentUser);
        }
        if !user_exists("postgres") {
            bail!("running as root, but there is no `postgres` user to run initdb/pg_ctl as");
        }
        Ok(if find_in_path("runuser").is_some() {
            Self::Runuser
        } else {
            Self::Su
        })
    }

    /// The argv that runs `program args...` as the right user.
    fn argv(self, program: &str, args: &[&str]) -> Vec<String> {
        let direct = std::iter::once(program).chain(args.iter().copied());
        match self {
            Self::CurrentUser => direct.map(str::to_owned).collect(),
            Self::Runuser => ["runuser", "-u", "postgres", "--"]
                .into_iter()
                .chain(direct)
                .map(str::to_owned)
                .collect(),
            Self::Su => {
                let command_line = direct.map(sh_quote).collect::<Vec<_>>().join(" ");
                ["su", "-s", "/bin/sh", "postgres", "-c"]
                    .into_iter()
                    .map(str::to_owned)
                    .chain([command_line])
                    .collect()
            }
        }
    }

    async fn run(self, cwd: &Path, program: &Path, args: &[&str]) -> Result<()> {
        let argv = self.argv(path_str(program)?, args);
        let output = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", argv.join(" ")))?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}):\n{}{}",
                argv.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Finds a PostgreSQL client/server program: on `PATH` first, then in the
/// newest `/usr/lib/postgresql/<version>/bin` that has it.
fn find_pg_binary(name: &str) -> Option<PathBuf> {
    find_in_path(name).or_else(|| {
        versioned_pg_bin_dirs()
            .into_iter()
            .map(|bin| bin.join(name))
            .find(|path| is_executable(path))
    })
}

/// `/usr/lib/postgresql/<version>/bin` directories, newest first.
fn versioned_pg_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    versions.into_iter().map(|(_, bin)| bin).collect()
}

/// Finds `initdb` and `pg_ctl`: on `PATH` first, then in the newest
/// `/usr/lib/postgresql/<version>/bin` that has both.
fn find_pg_tools() -> Result<(PathBuf, PathBuf)> {
    if let (Some(initdb), Some(pg_ctl)) = (find_in_path("initdb"), find_in_path("pg_ctl")) {
        return Ok((initdb, pg_ctl));
    }
    versioned_pg_bin_dirs()
        .into_iter()
        .map(|bin| (bin.join("initdb"), bin.join("pg_ctl")))
        .find(|(initdb, pg_ctl)| is_executable(initdb) && is_executable(pg_ctl))
        .context("could not find initdb and pg_ctl on PATH or in /usr/lib/postgresql/<version>/bin")
}

async fn start_cluster(durability: ClusterDurability) -> Result<PgCluster> {
    let (initdb, pg_ctl) = find_pg_tools()?;
    let run_as = RunAs::detect()?;

    let dir = unique_temp_dir("ironflow-pg-")?;
    let dir_str = path_str(&dir)?.to_owned();
    let data = dir.join("data");
    let data_str = path_str(&data)?.to_owned();
    let log_str = path_str(&dir.join("postgres.log"))?.to_owned();

    // Arm the cleanup first, so that even a failed start leaves nothing behind:
    // if this function fails the watchdog is dropped and cleans up right away.
    let stop = run_as
        .argv(
            path_str(&pg_ctl)?,
            &["stop", "-D", &data_str, "-m", "immediate", "-w"],
        )
        .iter()
        .map(|arg| sh_quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
    let watchdog = Watchdog::spawn(&format!(r#"{stop} >/dev/null 2>&1; rm -rf "$1""#), &[&dir])?;

    if !matches!(run_as, RunAs::CurrentUser) {
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&dir)
            .status()
            .context("running chown")?;
        anyhow::ensure!(
            status.success(),
            "chown postgres {dir_str} failed: {status}"
        );
    }

    run_as
        .run(
            &dir,
            &initdb,
            &[
                "-D",
                &data_str,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )
        .await?;

    let commits = match durability {
        ClusterDurability::Fast => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        ClusterDurability::Durable => "-c fsync=off -c synchronous_commit=on",
    };
    // TLS as a Debian server has it out of the box (its snake-oil certificate for localhost),
    // so TLS connections can be tested on a throwaway cluster too.
    let (cert, key) = (
        "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
    );
    let tls = if Path::new(cert).exists() && Path::new(key).exists() {
        format!(" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}")
    } else {
        String::new()
    };
    // The port is only reserved until pg_ctl starts, so retry if another
    // process grabs it in between.
    let mut attempt = 0;
    let (port, options) = loop {
        attempt += 1;
        let port = free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 {commits}{tls}",
            sh_quote(&dir_str)
        );
        let started = run_as
            .run(
                &dir,
                &pg_ctl,
                &[
                    "start", "-D", &data_str, "-l", &log_str, "-w", "-t", "60", "-o", &options,
                ],
            )
            .await;
        match started {
            Ok(()) => break (port, options),
            Err(err) if attempt >= 3 => {
                let log = std::fs::read_to_string(&log_str).unwrap_or_default();
                return Err(err.context(format!("server log:\n{log}")));
            }
            Err(_) => continue,
        }
    };

    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let conn = connect(&admin_url, Duration::from_secs(30)).await?;
    conn.close().await.context("closing the admin connection")?;

    Ok(PgCluster {
        admin_url,
        port,
        dir,
        data: data_str,
        log: log_str,
        options,
        pg_ctl,
        run_as,
        _watchdog: watchdog,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query_current_database(url: &str) -> String {
        let mut conn = PgConnection::connect(url)
            .await
            .expect("connect to test db");
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await
            .expect("current_database()");
        conn.close().await.expect("close");
        name
    }

    async fn user_table_count(conn: &mut PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
        )
        .fetch_one(conn)
        .await
        .expect("count tables")
    }

    async fn exists(admin_url: &str, name: &str) -> bool {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .expect("connect admin");
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .expect("query pg_database");
        conn.close().await.expect("close");
        exists
    }

    /// Two concurrent databases are empty, distinct and isolated; both ways
    /// of dropping them remove them from the server.
    async fn check_two_databases(a: PgDatabase, b: PgDatabase) {
        assert_ne!(a.name(), b.name());
        assert_ne!(a.url(), b.url());
        assert!(a.name().starts_with("ironflow_test_"));
        assert_eq!(query_current_database(a.url()).await, a.name());
        assert_eq!(query_current_database(b.url()).await, b.name());

        let mut conn_a = PgConnection::connect(a.url()).await.expect("connect a");
        let mut conn_b = PgConnection::connect(b.url()).await.expect("connect b");
        assert_eq!(user_table_count(&mut conn_a).await, 0, "a starts empty");
        assert_eq!(user_table_count(&mut conn_b).await, 0, "b starts empty");

        sqlx::query("CREATE TABLE only_in_a (id int PRIMARY KEY)")
            .execute(&mut conn_a)
            .await
            .expect("create table in a");
        let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
            .fetch_one(&mut conn_b)
            .await
            .expect("to_regclass in b");
        assert_eq!(in_b, None, "table created in a is absent in b");
        assert_eq!(user_table_count(&mut conn_a).await, 1);
        assert_eq!(user_table_count(&mut conn_b).await, 0);

        let admin_url = a.admin_url.clone();
        let (name_a, name_b) = (a.name().to_owned(), b.name().to_owned());
        assert!(exists(&admin_url, &name_a).await);
        assert!(exists(&admin_url, &name_b).await);

        // Drop while sessions are still connected: WITH (FORCE) handles that.
        a.drop_database().await.expect("drop a");
        drop(b);
        assert!(!exists(&admin_url, &name_a).await, "a was dropped");
        assert!(!exists(&admin_url, &name_b).await, "b was dropped");
        drop((conn_a, conn_b));
    }

    /// Uses whichever server `postgres()` picks (env var or local cluster).
    #[tokio::test]
    async fn postgres_gives_fresh_isolated_databases() {
        let (a, b) = tokio::join!(postgres(), postgres());
        check_two_databases(a.expect("database a"), b.expect("database b")).await;
    }

    /// Always exercises the initdb/pg_ctl path, even if the env var is set.
    #[tokio::test]
    async fn local_cluster_gives_fresh_isolated_databases() {
        let cluster = local_cluster().await.expect("local cluster");
        let (a, b) = tokio::join!(
            create_database(&cluster.admin_url, false),
            create_database(&cluster.admin_url, false)
        );
        check_two_databases(a.expect("database a"), b.expect("database b")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_databases() {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            tasks.spawn(async {
                let db = postgres().await.expect("create database");
                assert_eq!(query_current_database(db.url()).await, db.name());
                db
            });
        }
        let mut dbs = Vec::new();
        while let Some(db) = tasks.join_next().await {
            dbs.push(db.expect("task"));
        }
        let admin_url = dbs[0].admin_url.clone();
        let names: Vec<String> = dbs.iter().map(|db| db.name().to_owned()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        drop(dbs);
        for name in &names {
            assert!(!exists(&admin_url, name).await, "{name} was dropped");
        }
    }

    /// A test that panics while holding a database does not leak it.
    #[test]
    fn database_is_dropped_when_a_test_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let panicked = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let db = postgres().await.expect("create database");
                tx.send((db.admin_url.clone(), db.name().to_owned()))
                    .expect("send");
                panic!("simulated test failure holding {}", db.name());
            })
        })
        .join();
        assert!(panicked.is_err());
        let (admin_url, name) = rx.recv().expect("database name");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        assert!(!runtime.block_on(exists(&admin_url, &name)));
    }

    #[test]
    fn database_url_replaces_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "x").expect("url"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            database_url(
                "postgresql://u:p@h/postgres?sslmode=disable&dbname=postgres",
                "x"
            )
            .expect("url"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert!(database_url("mysql://h/db", "x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
