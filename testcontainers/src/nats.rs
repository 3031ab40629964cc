//! Fresh NATS servers with JetStream, one child process per test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncBufReadExt;

use crate::process::{Watchdog, find_in_path, free_port, is_executable, unique_temp_dir};

/// Environment variable naming the `nats-server` binary to use.
const NATS_SERVER_ENV: &str = "IRONFLOW_TEST_NATS_SERVER";

/// How long a server may take to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `nats-server` (JetStream enabled) owned by one test.
///
/// Dropping the handle kills the server and removes its storage directory. If
/// the test process dies without dropping it, a watchdog does the same.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    dir: PathBuf,
    child: Child,
    watchdog: Option<Watchdog>,
}

/// Starts a fresh `nats-server -js` on a free port of 127.0.0.1 with its own
/// storage directory, and waits until it accepts client connections.
pub async fn nats() -> Result<NatsServer> {
    let binary = nats_binary()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start(&binary).await? {
            Started::Ready(server) => return Ok(server),
            // Most likely another process took the port between picking and
            // binding it; try again with a new one.
            Started::Exited(_) if attempt < 3 => continue,
            Started::Exited(err) => return Err(err),
        }
    }
}

impl NatsServer {
    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats-server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        // Errors mean that the server has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nats_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV).filter(|path| !path.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = find_in_path("nats-server") {
        return Ok(path);
    }
    let fallback = Path::new("/usr/sbin/nats-server");
    if is_executable(fallback) {
        return Ok(fallback.to_owned());
    }
    bail!("could not find nats-server: set {NATS_SERVER_ENV}, or put it on PATH")
}

enum Started {
    Ready(NatsServer),
    /// The server exited during startup.
    Exited(anyhow::Error),
}

async fn start(binary: &Path) -> Result<Started> {
    let dir = unique_temp_dir("ironflow-nats-")?;
    let cleanup_dir = DirGuard(Some(dir.clone()));
    let port = free_port()?;
    // A unique server name lets us tell our server apart from anything else
    // that might have grabbed the port.
    let name = format!("ironflow-test-{}", uuid::Uuid::new_v4().simple());
    let log = File::create(dir.join("nats-server.log")).context("creating the NATS log file")?;
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .args(["-n", &name])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut server = NatsServer {
        port,
        dir: cleanup_dir.disarm(),
        child,
        watchdog: None,
    };
    server.watchdog = Some(Watchdog::spawn(
        r#"kill -9 "$1" 2>/dev/null; rm -rf "$2""#,
        &[
            server.child.id().to_string().as_ref(),
            server.dir.as_os_str(),
        ],
    )?);

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(status) = server.child.try_wait().context("polling nats-server")? {
            let log = server.log();
            return Ok(Started::Exited(anyhow::anyhow!(
                "nats-server exited during startup ({status}); its output:\n{log}"
            )));
        }
        let problem = match tokio::time::timeout(Duration::from_secs(2), read_info(port)).await {
            Ok(Ok(info)) => {
                let ours = info.contains(&format!("\"server_name\":\"{name}\""));
                if ours && info.contains("\"jetstream\":true") {
                    return Ok(Started::Ready(server));
                }
                format!("unexpected INFO from port {port}: {info}")
            }
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => "timed out reading INFO".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!(
                "nats-server did not become ready on port {port} within {STARTUP_TIMEOUT:?} \
                 ({problem}); its output:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Connects to the port and returns the server's first protocol line.
async fn read_info(port: u16) -> Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut line = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut line)
        .await?;
    anyhow::ensure!(line.starts_with("INFO {"), "unexpected greeting: {line:?}");
    Ok(line)
}

/// Removes a directory on drop unless disarmed.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn disarm(mut self) -> PathBuf {
        self.0.take().expect("DirGuard is armed until disarmed")
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nats_server_accepts_connections_and_cleans_up() {
        let (a, b) = tokio::join!(nats(), nats());
        let (a, b) = (a.expect("nats a"), b.expect("nats b"));
        assert_ne!(a.port(), b.port());
        assert_eq!(a.url(), format!("nats://127.0.0.1:{}", a.port()));

        for server in [&a, &b] {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
                .await
                .expect("TCP connect");
            let mut line = String::new();
            tokio::io::BufReader::new(stream)
                .read_line(&mut line)
                .await
                .expect("read INFO");
            assert!(line.starts_with("INFO {"), "got {line:?}");
            assert!(line.contains("\"jetstream\":true"), "got {line:?}");
        }

        let (port, dir) = (a.port(), a.dir.clone());
        assert!(dir.exists());
        drop(a);
        assert!(!dir.exists(), "storage dir removed");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "server is gone"
        );
        drop(b);
    }
}
