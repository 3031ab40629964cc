//! Command-line interface: `ironflow serve`, `migrate` and `bench` (on a database), and the
//! client commands `runs`, `events`, `functions`, `history` and `inspect` (on a running server).

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
    /// A consistent copy of the SQLite database, taken while the server runs (Postgres:
    /// `pg_dump`, see the README).
    Backup(BackupArgs),
    /// API keys, minted on the database directly (like `migrate`): the way back in when the
    /// admin key is lost.
    Keys(KeysArgs),
    /// Measure durable steps/s through the Rust SDK worker against a database, next to the
    /// database's raw single-row commit rate, plus latencies (use a scratch database).
    Bench(BenchArgs),
    /// Runs on a server: list, get, steps, cancel, pause, resume, inject, patch.
    Runs(RunsArgs),
    /// Events on a server: emit, list, get.
    Events(EventsArgs),
    /// Functions on a server: list, get, history, rollback.
    Functions(FunctionsArgs),
    /// A run's history as a timeline, or (with --at) its state at an instant.
    History(HistoryArgs),
    /// A read-only SQL query over the history views of the environment (`ExecuteSQL`),
    /// printed as a table.
    Sql(SqlArgs),
    /// A terminal debugger for one run: its timeline beside its state at the cursor; edit a
    /// step in $EDITOR, pause, resume, follow it live; --replay plays it forward; --dap speaks
    /// the Debug Adapter Protocol on stdio (VS Code).
    Inspect(InspectArgs),
    /// The worker process `ironflow bench` starts (observations as JSON lines on stdout; stops
    /// when stdin closes).
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
}

#[derive(Debug, Args)]
pub struct BenchWorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub steps: usize,
    #[arg(long)]
    pub concurrency: usize,
}

impl BenchWorkerArgs {
    pub fn options(&self) -> crate::bench::WorkerOptions {
        crate::bench::WorkerOptions {
            server_url: self.url.clone(),
            workload: crate::bench::Workload {
                prefix: self.prefix.clone(),
                steps: self.steps,
            },
            concurrency: self.concurrency,
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The database to measure: `postgres://…`, or a SQLite file path.
    #[arg(long = "db")]
    pub database_url: String,
    /// What to measure: `steps` (durable workflow steps), `appends` (entity-stream appends
    /// with an expected version, and ReadStream of 1 000 events) or `sql-projection` (a SQL
    /// projection applying appended events, and append-to-visible latency under load) or
    /// `authz` (authorization overhead per request with `--policy-modules` deny modules) or
    /// `cron` (tick to run lateness of `--cron-functions` per-second schedules over `--ticks`).
    #[arg(long, default_value = "steps", value_parser = ["steps", "appends", "sql-projection", "authz", "cron"])]
    pub mode: String,
    /// `--mode cron`: functions with a per-second schedule.
    #[arg(long, default_value_t = 20)]
    pub cron_functions: usize,
    /// `--mode cron`: ticks measured.
    #[arg(long, default_value_t = 200)]
    pub ticks: usize,
    /// `--mode authz`: policy modules in force.
    #[arg(long, default_value_t = 20)]
    pub policy_modules: usize,
    /// `--mode sql-projection`: appended events in the backlog the projection applies.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// `--mode appends`: appends per writer (each of the C writers owns one stream).
    #[arg(long, default_value_t = 500)]
    pub appends_per_writer: usize,
    /// Workflows run for the throughput figure.
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Durable steps per workflow.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Jobs in flight on the SDK worker, and connections for the raw commit rate.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Sequential samples for the latency figures.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Seconds the raw commit rate is measured.
    #[arg(long, default_value_t = 5)]
    pub raw_secs: u64,
    /// Run the SDK worker as a task of the bench's process instead of its own process.
    #[arg(long)]
    pub in_process_worker: bool,
    /// Queued runs (of a function no worker serves) to seed behind the measured ones.
    #[arg(long, default_value_t = 0)]
    pub backlog: u64,
    /// History rows to seed with the backlog [default: 10 per backlog run].
    #[arg(long)]
    pub backlog_history: Option<u64>,
    /// Also print the figures as one JSON object, as the last line.
    #[arg(long)]
    pub json: bool,
    /// `--mode steps`: server nodes on the one database (Postgres), each with its own worker.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// `--mode steps` on Postgres: the schema the server uses.
    #[arg(long, env = "IRONFLOW_DB_SCHEMA", default_value = "ironflow", value_parser = parse_schema)]
    pub db_schema: crate::store::pg_layout::DbSchema,
}

fn parse_schema(name: &str) -> Result<crate::store::pg_layout::DbSchema, String> {
    crate::store::pg_layout::DbSchema::parse(name)
}

impl BenchArgs {
    pub fn append_options(&self) -> crate::bench::AppendOptions {
        crate::bench::AppendOptions {
            database_url: self.database_url.clone(),
            concurrency: self.concurrency,
            per_writer: self.appends_per_writer,
            raw_for: std::time::Duration::from_secs(self.raw_secs.max(1)),
            read_samples: self.latency_samples.clamp(1, 200),
        }
    }

    pub fn authz_options(&self) -> crate::bench::AuthzOptions {
        crate::bench::AuthzOptions {
            database_url: self.database_url.clone(),
            modules: self.policy_modules,
            samples: self.latency_samples.max(1000),
        }
    }

    pub fn cron_options(&self) -> crate::bench::CronBenchOptions {
        crate::bench::CronBenchOptions {
            database_url: self.database_url.clone(),
            functions: self.cron_functions,
            ticks: self.ticks,
        }
    }

    pub fn projection_options(&self) -> crate::bench::ProjectionBenchOptions {
        crate::bench::ProjectionBenchOptions {
            database_url: self.database_url.clone(),
            concurrency: self.concurrency,
            events: self.events,
            probes: self.latency_samples.max(1),
        }
    }

    pub fn options(&self) -> crate::bench::BenchOptions {
        crate::bench::BenchOptions {
            database_url: self.database_url.clone(),
            schema: self.db_schema.clone(),
            workflows: self.workflows,
            steps: self.steps,
            concurrency: self.concurrency,
            latency_samples: self.latency_samples,
            raw_for: std::time::Duration::from_secs(self.raw_secs.max(1)),
            in_process_worker: self.in_process_worker,
            nodes: self.nodes,
            backlog: crate::bench::Backlog {
                runs: self.backlog,
                history: self
                    .backlog_history
                    .unwrap_or(self.backlog.saturating_mul(10)),
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Postgres URL (`postgres://…`). Without it, SQLite at `<data-dir>/ironflow.db`.
    #[arg(long = "db", env = "IRONFLOW_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the embedded SQLite database lives when no Postgres URL is given.
    #[arg(long, env = "IRONFLOW_DATA_DIR", default_value = ".ironflow")]
    pub data_dir: PathBuf,
    /// Postgres: the schema every table, view and function lives in.
    #[arg(long, env = "IRONFLOW_DB_SCHEMA", default_value = "ironflow", value_parser = parse_schema)]
    pub db_schema: crate::store::pg_layout::DbSchema,
    /// Postgres: `--db` is a transaction-mode pooler (PgBouncer `pool_mode = transaction`):
    /// no named prepared statements or session settings.
    #[arg(long, env = "IRONFLOW_DB_TRANSACTION_POOLER")]
    pub db_transaction_pooler: bool,
    /// Postgres: a direct (session) connection for LISTEN and migrations, next to a pooled `--db`.
    #[arg(long, env = "IRONFLOW_DB_LISTEN_URL")]
    pub db_listen_url: Option<String>,
    /// Postgres: connections in this node's pool.
    #[arg(long, env = "IRONFLOW_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,
    /// Postgres: longest one statement may run, in milliseconds (`statement_timeout`); 0: no limit.
    #[arg(long, env = "IRONFLOW_DB_STATEMENT_TIMEOUT_MS", default_value_t = 0)]
    pub db_statement_timeout_ms: u64,
    /// Postgres: the `application_name` of this node's connections.
    #[arg(long, env = "IRONFLOW_DB_APPLICATION_NAME", default_value = "ironflow")]
    pub db_application_name: String,
    /// Postgres: CA certificate file to verify the server with (with `sslmode=verify-full`).
    #[arg(long, env = "IRONFLOW_DB_CA_FILE")]
    pub db_ca_file: Option<PathBuf>,
}

impl DatabaseArgs {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.clone(),
            _ => self.data_dir.join("ironflow.db").display().to_string(),
        }
    }

    /// The store to open, with every `--db-*` setting.
    pub fn options(&self) -> crate::store::DbOptions {
        crate::store::DbOptions {
            url: self.url(),
            postgres: crate::store::postgres::PgOptions {
                schema: self.db_schema.clone(),
                listen_url: self.db_listen_url.clone().filter(|u| !u.trim().is_empty()),
                transaction_pooler: self.db_transaction_pooler,
                pool_size: self.db_pool_size.max(1),
                statement_timeout: (self.db_statement_timeout_ms > 0)
                    .then(|| std::time::Duration::from_millis(self.db_statement_timeout_ms)),
                application_name: self.db_application_name.clone(),
                ca_file: self.db_ca_file.clone(),
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where the copy goes (a new file).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Mint a key and print it once (only its hash is stored).
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        /// admin, developer, viewer, or a custom role's id or name (repeatable).
        #[arg(long = "role", default_value = "admin")]
        roles: Vec<String>,
        #[arg(long, default_value = "recovery key")]
        name: String,
        /// The organisation (id); the root organisation by default.
        #[arg(long)]
        org: Option<String>,
        /// The project (id); the organisation's first by default.
        #[arg(long)]
        project: Option<String>,
        /// Scope the key to one environment (name or id); the whole project by default.
        #[arg(long)]
        env: Option<String>,
        /// Expire the key after this long (`90d`, `12h`).
        #[arg(long)]
        expires_in: Option<String>,
    },
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
    /// What happens to an event that does not match its registered JSON Schema: off, warn
    /// (stored and flagged) or reject (refused with 400). A schema can set its own with
    /// `"x-ironflow-enforcement"`.
    #[arg(long, env = "IRONFLOW_EVENT_SCHEMA_ENFORCEMENT", default_value = "off")]
    pub event_schema_enforcement: String,
    /// Seconds a projection runner's lease lasts without a renewal; the runner renews every
    /// third of it, and a standby runner takes over this long after the holder died.
    #[arg(long, env = "IRONFLOW_PROJECTION_LEASE_TTL_SECS", default_value_t = 15)]
    pub projection_lease_ttl_secs: u64,
    /// AES-256 key for secrets at rest: 32 bytes as 64 hex characters or base64.
    #[arg(long, env = "IRONFLOW_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Signs push requests (`X-Ironflow-Signature`); the same variable ironflow-py's `serve()`
    /// verifies with.
    #[arg(long, env = "IRONFLOW_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Push: the longest one request to a function's endpoint may take, in seconds.
    #[arg(long, env = "IRONFLOW_PUSH_TIMEOUT_SECS", default_value_t = 30)]
    pub push_timeout_secs: u64,
    /// Push: requests in flight per endpoint URL on this node.
    #[arg(long, env = "IRONFLOW_PUSH_CONCURRENCY", default_value_t = 16)]
    pub push_concurrency: usize,
    /// Push: consecutive failed requests that open an endpoint's circuit breaker.
    #[arg(long, env = "IRONFLOW_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Push: seconds an open circuit breaker waits before one probe request.
    #[arg(long, env = "IRONFLOW_BREAKER_OPEN_SECS", default_value_t = 60)]
    pub breaker_open_secs: u64,
    /// NATS server with JetStream for the KV store (`nats://host:4222`); KV stays in the
    /// database without it.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Log filter (`info`, `debug`, `ironflow=debug,sqlx=warn`); without it `RUST_LOG`, else
    /// `info`.
    #[arg(long, env = "LOG_LEVEL")]
    pub log_level: Option<String>,
    /// `text` (colours only on a terminal) or `json` (one object per line, with the request's
    /// span: its id, method and path).
    #[arg(long, env = "IRONFLOW_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Export spans over OTLP/gRPC to this collector (`http://127.0.0.1:4317`): requests, emits,
    /// dispatches, commits, push requests; off (and free) without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl ServeArgs {
    pub fn push_options(&self) -> crate::engine::PushOptions {
        crate::engine::PushOptions {
            signing_key: self.signing_key.clone().filter(|k| !k.trim().is_empty()),
            request_timeout: std::time::Duration::from_secs(self.push_timeout_secs.max(1)),
            max_in_flight_per_endpoint: self.push_concurrency.max(1),
            breaker: crate::domain::breaker::BreakerSettings {
                failure_threshold: self.breaker_failures.max(1),
                open_for: std::time::Duration::from_secs(self.breaker_open_secs.max(1)),
            },
        }
    }

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
            database: self.database.options(),
            dev: self.dev,
            bootstrap_key_file: self.bootstrap_key_file.clone(),
            max_payload_bytes: self.max_payload_bytes,
            lease_ttl: std::time::Duration::from_secs(self.lease_ttl_secs.max(1)),
            master_key,
            nats_url: self.nats_url.clone().filter(|u| !u.trim().is_empty()),
            schema_enforcement: crate::domain::event_schema::Enforcement::parse(
                &self.event_schema_enforcement,
            )
            .map_err(|e| anyhow::anyhow!("--event-schema-enforcement: {e}"))?,
            projection_lease_ttl: std::time::Duration::from_secs(
                self.projection_lease_ttl_secs.max(1),
            ),
        })
    }
}

/// How the client commands reach a server.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// The server's URL.
    #[arg(
        long = "server",
        env = "IRONFLOW_SERVER_URL",
        default_value = "http://127.0.0.1:9123",
        global = true
    )]
    pub server_url: String,
    /// An API key of that server (`ifkey_…`).
    #[arg(long, env = "IRONFLOW_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// The environment, when the key reaches more than one.
    #[arg(long = "env", env = "IRONFLOW_ENVIRONMENT", global = true)]
    pub environment: Option<String>,
    /// Print the server's JSON (for scripts) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ConnectionArgs {
    pub fn options(&self) -> crate::client::ClientOptions {
        crate::client::ClientOptions {
            server_url: self.server_url.clone(),
            api_key: self.api_key.clone(),
            environment: self.environment.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The newest runs.
    List {
        #[arg(long)]
        function: Option<String>,
        /// running, completed, failed, cancelled, paused, waiting, …
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: status, input, output, error.
    Get { run: String },
    /// A run's steps.
    Steps { run: String },
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pause now (a parked run) or at the next step boundary (a running one).
    Pause { run: String },
    /// Resume a paused or failed run, optionally from a step (a step id or name).
    Resume {
        run: String,
        #[arg(long)]
        from_step: Option<String>,
    },
    /// Replace the output of a paused run's step (a step id or name); the resumed run uses it.
    Inject {
        run: String,
        step: String,
        /// The new output, as JSON.
        output: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Edit the output of a failed or completed step of a stopped run (keeps the original).
    Patch {
        run: String,
        step: String,
        /// The new output, as JSON.
        output: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Store an event (and start the runs it triggers).
    Emit {
        name: String,
        /// The event's data, as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    Get {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct FunctionsArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: FunctionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    List,
    Get {
        id: String,
    },
    /// Every change of the function: new versions, status changes, rollbacks.
    History {
        id: String,
    },
    /// Make a stored definition version current again (as a new version).
    Rollback {
        id: String,
        version: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    pub run: String,
    /// Show the run's state at this instant (RFC 3339) instead of the timeline.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// One SELECT over the documented views (`ironflow_runs`, `ironflow_events`, …).
    pub query: String,
    /// Stop the query after this many milliseconds (at most 30 000).
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: i64,
    /// Return at most this many rows (at most 10 000).
    #[arg(long, default_value_t = 1000)]
    pub max_rows: i64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    pub run: String,
    /// Start with the cursor at this instant (RFC 3339).
    #[arg(long)]
    pub at: Option<String>,
    /// Play the run's history forward from the start.
    #[arg(long)]
    pub replay: bool,
    /// Replay speed: history entries per second.
    #[arg(long, default_value_t = 4.0)]
    pub speed: f64,
    /// Speak the Debug Adapter Protocol on stdin/stdout instead of drawing a terminal UI.
    #[arg(long)]
    pub dap: bool,
}
