//! `ironflow serve`: opens the store, migrates, bootstraps tenancy, and serves the API until
//! Ctrl-C / SIGTERM, then drains in-flight requests and closes the database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, auth::Authenticator};
use crate::engine::{Engine, EngineOptions};
use crate::store::{self, SharedStore};
use crate::tenancy;

/// Everything `serve` needs, already resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: std::net::IpAddr,
    pub port: u16,
    pub database: store::DbOptions,
    pub dev: bool,
    pub bootstrap_key_file: Option<PathBuf>,
    pub max_payload_bytes: usize,
    /// The stale-claim threshold: a leased job without heartbeat for this long is re-dispatched.
    pub lease_ttl: std::time::Duration,
    /// `IRONFLOW_MASTER_KEY`, already parsed; `None` disables storing secrets.
    pub master_key: Option<crate::domain::secret::MasterKey>,
    /// `--nats-url` / `NATS_URL`: KV buckets live in NATS JetStream instead of the database.
    pub nats_url: Option<String>,
    /// `--event-schema-enforcement`: off, warn or reject, for names whose schema sets no mode.
    pub schema_enforcement: crate::domain::event_schema::Enforcement,
    /// How long a projection runner's lease lasts without a renewal.
    pub projection_lease_ttl: std::time::Duration,
}

/// A running server: its address, and a token that stops it.
pub struct Server {
    pub local_addr: SocketAddr,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Waits until the server has stopped (after `shutdown` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Opens and migrates the store named by the URL.
pub async fn open_store(database: &store::DbOptions) -> anyhow::Result<SharedStore> {
    let store = store::open_with(database)
        .await
        .with_context(|| format!("opening database {}", redact_url(&database.url)))?;
    store.migrate().await.context("running migrations")?;
    Ok(store)
}

/// Starts serving with default push settings (unsigned requests); see [`start_with_push`].
pub async fn start(
    options: ServeOptions,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<Server> {
    start_with_push(options, crate::engine::PushOptions::default(), metrics).await
}

/// Starts serving; returns once the listener is bound and the database is ready.
pub async fn start_with_push(
    options: ServeOptions,
    push: crate::engine::PushOptions,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<Server> {
    let started = Instant::now();
    let store = open_store(&options.database).await?;
    if let Some(secret) = tenancy::bootstrap(&store)
        .await
        .context("bootstrapping tenancy")?
    {
        announce_bootstrap_key(&secret, options.bootstrap_key_file.as_deref())?;
    } else if let Some(path) = options.bootstrap_key_file.as_deref() {
        // A second boot creates nothing: say so, and how to get a key, rather than leave the
        // operator waiting for a file that will never be written.
        tracing::warn!(
            file = %path.display(),
            "the database already has an organisation: no bootstrap key was created"
        );
        eprintln!(
            "ironflow: this database already has an organisation, so no bootstrap key was created \
             and {} was not written. To mint a new admin key, run:\n\n    \
             ironflow keys create --role admin --db <database URL>\n",
            path.display()
        );
    }
    if options.dev {
        tracing::warn!(
            "*** DEV MODE: authentication is OFF; every request acts as admin. Never use --dev in production. ***"
        );
        eprintln!("ironflow: WARNING: --dev disables authentication; every request acts as admin");
    }
    // One NATS connection serves both the KV buckets and the live fan-out between nodes.
    let (kv, fanout) = match options.nats_url.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(url) => {
            let nats = crate::engine::NatsKv::connect(url).await?;
            let fanout = crate::engine::NatsFanout::connect(nats.client()).await?;
            (crate::engine::KvBackend::Nats(nats), Some(fanout))
        }
        None => (crate::engine::KvBackend::Database, None),
    };
    let engine = Engine::new(
        store.clone(),
        EngineOptions {
            max_payload_bytes: options.max_payload_bytes,
            lease_ttl: options.lease_ttl,
            master_key: options.master_key.clone(),
            push,
            kv,
            fanout,
            schema_enforcement: options.schema_enforcement,
            projection_lease_ttl: options.projection_lease_ttl,
        },
    );
    engine
        .check_master_key()
        .await
        .context("checking IRONFLOW_MASTER_KEY against stored secrets")?;
    let mut background = engine.spawn_background();
    if metrics.is_some() {
        // Gauges are only worth their queries when something scrapes them.
        let sampler = engine.clone();
        background.push(tokio::spawn(
            async move { sampler.run_gauge_sampler().await },
        ));
    }
    let engine_token = engine.shutdown_token().clone();
    let state = AppState {
        auth: Authenticator::new(engine.clone(), options.dev),
        engine,
        metrics,
        max_request_bytes: api::request_limit(options.max_payload_bytes),
    };
    let app = api::router(state);
    let listener = TcpListener::bind((options.bind, options.port))
        .await
        .with_context(|| format!("binding {}:{}", options.bind, options.port))?;
    let local_addr = listener.local_addr()?;
    // Without TCP_NODELAY a small answer (a `step_ack` on the worker stream, a sync trigger's
    // result) can sit in Nagle's buffer until the peer's delayed ACK: ~40 ms stalls.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                token.cancelled().await;
                // Release held polls and sync waits so in-flight requests can finish.
                engine_token.cancel();
            })
            .await
            .context("serving HTTP")?;
        for task in background {
            let _ = task.await;
        }
        store.close().await;
        Ok(())
    });
    tracing::info!(
        addr = %local_addr,
        backend = %options.database.url.split(':').next().unwrap_or_default(),
        ready_ms = started.elapsed().as_millis() as u64,
        "ironflow ready"
    );
    Ok(Server {
        local_addr,
        shutdown,
        task,
    })
}

fn announce_bootstrap_key(secret: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    eprintln!("ironflow: created the root organisation, the 'default' project and environment.");
    eprintln!("ironflow: admin API key (shown once, only its hash is stored):\n\n    {secret}\n");
    if let Some(path) = file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_private(path, secret)
            .with_context(|| format!("writing the bootstrap key to {}", path.display()))?;
        eprintln!(
            "ironflow: the admin key was also written to {}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{secret}\n"))
}

/// Hides a password in a database URL before it is logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => {
                    format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The Prometheus exporter as the binary installs it: durations (`*_seconds`) and batch sizes
/// (`*_size`) are histograms with fixed buckets, not summaries, so they aggregate across nodes.
pub fn prometheus_builder()
-> Result<metrics_exporter_prometheus::PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const SECONDS: [f64; 15] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    const SIZES: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZES)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url(".ironflow/ironflow.db"), ".ironflow/ironflow.db");
    }
}
