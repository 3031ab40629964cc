//! Command-line interface: `ironflow serve` and `ironflow migrate`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::server::ServeOptions;

#[derive(Debug, Parser)]
#[command(
    name = "ironflow",
    version,
    about = "Continuous History: events, durable workflows and time travel over your database"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (REST, ConnectRPC, health and metrics on one port).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres URL (`postgres://…`). Without it, SQLite at `<data-dir>/ironflow.db`.
    #[arg(long = "db", env = "IRONFLOW_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the embedded SQLite database lives when no Postgres URL is given.
    #[arg(long, env = "IRONFLOW_DATA_DIR", default_value = ".ironflow")]
    pub data_dir: PathBuf,
}

impl DatabaseArgs {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => self.data_dir.join("ironflow.db").display().to_string(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Port for every protocol.
    #[arg(long, env = "IRONFLOW_PORT", default_value_t = 9123)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "IRONFLOW_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Disable authentication (local development only; says so loudly at start).
    #[arg(long, env = "IRONFLOW_DEV")]
    pub dev: bool,
    /// Also write the admin API key created at first boot to this file (mode 0600).
    #[arg(long, env = "IRONFLOW_BOOTSTRAP_KEY_FILE")]
    pub bootstrap_key_file: Option<PathBuf>,
    /// Largest accepted event payload in bytes (data + metadata).
    #[arg(long, env = "IRONFLOW_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Seconds a dispatched job stays leased without a heartbeat or checkpoint before it is
    /// given to another worker (the stale-claim threshold).
    #[arg(long, env = "IRONFLOW_LEASE_TTL_SECS", default_value_t = 90)]
    pub lease_ttl_secs: u64,
    /// AES-256 key for secrets at rest: 32 bytes as 64 hex characters or base64.
    #[arg(long, env = "IRONFLOW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Log filter (`info`, `debug`, `ironflow=debug,sqlx=warn`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl ServeArgs {
    pub fn options(&self) -> anyhow::Result<ServeOptions> {
        let master_key = self
            .master_key
            .as_deref()
            .filter(|k| !k.trim().is_empty())
            .map(crate::domain::secret::MasterKey::parse)
            .transpose()?;
        Ok(ServeOptions {
            bind: self.bind,
            port: self.port,
            database_url: self.database.url(),
            dev: self.dev,
            bootstrap_key_file: self.bootstrap_key_file.clone(),
            max_payload_bytes: self.max_payload_bytes,
            lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs.max(1)),
            master_key,
        })
    }
}
