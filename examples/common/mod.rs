//! What the latency examples share: an in-process server on a scratch database, percentiles.

use std::time::Duration;

/// A server on `db` (a SQLite file in `dir` when none is given), on a free loopback port, in
/// dev mode (no key needed).
pub async fn start_server(
    db: Option<String>,
    dir: &std::path::Path,
    file: &str,
) -> anyhow::Result<(ironflow::server::Server, String)> {
    let db = db.unwrap_or_else(|| dir.join(file).display().to_string());
    let options = ironflow::server::ServeOptions {
        bind: "127.0.0.1".parse()?,
        port: 0,
        database: ironflow::store::DbOptions::url(db.clone()),
        dev: true,
        bootstrap_key_file: None,
        max_payload_bytes: 1 << 20,
        lease_ttl: Duration::from_secs(90),
        master_key: None,
        nats_url: None,
        schema_enforcement: Default::default(),
        projection_lease_ttl: std::time::Duration::from_secs(15),
    };
    Ok((ironflow::server::start(options, None).await?, db))
}

/// The `p` quantile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn backend_name(db: &str) -> &'static str {
    if db.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}
