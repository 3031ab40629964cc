//! Process helpers shared by the Postgres and NATS fixtures: locating binaries,
//! choosing free ports, unique temporary directories and cleanup watchdogs.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// Finds an executable called `name` in the directories listed in `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a regular file with at least one execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Picks a currently free TCP port on 127.0.0.1.
///
/// The port is released again before returning, so another process could grab
/// it in the meantime; callers retry with a new port when the server fails to
/// start.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .context("binding 127.0.0.1:0 to pick a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Creates a new, uniquely named directory (mode 0700) in the system temp dir.
pub(crate) fn unique_temp_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting permissions on {}", dir.display()))?;
    Ok(dir)
}

/// Quotes `s` for use as a single word in a POSIX shell command line.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Returns `path` as UTF-8, which the shell command lines built here need.
pub(crate) fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not valid UTF-8", path.display()))
}

/// A `sh` process that runs a cleanup script once our process goes away.
///
/// The watchdog blocks reading its stdin, a pipe whose only writer is this
/// process (std creates pipes close-on-exec, so no other child inherits it).
/// When this process exits for whatever reason (normal exit, panic, abort,
/// SIGKILL) or the [`Watchdog`] is dropped, the pipe closes and the script
/// runs. It lives in its own process group, so a Ctrl-C aimed at the test
/// process group does not kill it before it has cleaned up.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Spawns `sh -c 'read; <cleanup>'`.
    ///
    /// `args` are available to `cleanup` as `$1`, `$2`, ... so that they need
    /// no quoting.
    pub(crate) fn spawn<S: AsRef<OsStr>>(cleanup: &str, args: &[S]) -> Result<Self> {
        let script = format!("read -r _ignored; {cleanup}");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("ironflow-testcontainers-watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning the cleanup watchdog (sh)")?;
        Ok(Self { child })
    }

    /// Kills the watchdog without running its cleanup script, for when the
    /// owner has already cleaned up itself.
    pub(crate) fn disarm(mut self) {
        // Errors only mean that the watchdog is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog run its cleanup script (unless it
        // was disarmed, in which case it is dead already).
        drop(self.child.stdin.take());
    }
}

/// Whether this process runs as root (uid 0).
pub(crate) fn running_as_root() -> Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .context("running `id -u`")?;
    anyhow::ensure!(output.status.success(), "`id -u` failed: {}", output.status);
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Whether a local user account called `user` exists.
pub(crate) fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_handles_single_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn watchdog_runs_cleanup_when_dropped_but_not_when_disarmed() {
        let dir = unique_temp_dir("ironflow-watchdog-test-").expect("temp dir");
        let fired = dir.join("fired");
        let disarmed = dir.join("disarmed");

        Watchdog::spawn(r#"touch "$1""#, &[&disarmed])
            .expect("spawn watchdog")
            .disarm();
        drop(Watchdog::spawn(r#"touch "$1""#, &[&fired]).expect("spawn watchdog"));

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !fired.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(fired.exists(), "dropped watchdog ran its cleanup");
        assert!(
            !disarmed.exists(),
            "disarmed watchdog did not run its cleanup"
        );
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }
}
