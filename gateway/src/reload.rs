//! Org reload without a restart: what a reload changed or why it was
//! refused, and the two files through which `ptt-gateway reload` reaches
//! the running gateway.
//!
//! `serve` writes its process id to `<data_dir>/gateway.pid` at start and
//! removes it at a clean stop. `ptt-gateway reload` sends that process
//! SIGHUP; the gateway reloads the org (and whatever else SIGHUP reloads)
//! and writes the result to `<data_dir>/reload.status` (one JSON object,
//! replaced atomically), which the command waits for and prints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use ptt_gateway_core::reload::Diff;
use serde::{Deserialize, Serialize};

use crate::org::auth::KeyError;

/// Why a reload was refused. The running org is untouched by every one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The gateway was started without an org file path to read again.
    #[error("no org file configured")]
    NoOrgFile,
    /// The new org file does not load (unreadable or invalid).
    #[error("org file refused: {0}")]
    Org(#[from] crate::org::Error),
    /// Its provisioning key file cannot be read.
    #[error("provisioning key refused: {0}")]
    Key(#[from] KeyError),
    /// The org file names no provisioning key, and none is configured.
    #[error("the org file names no key_file and no provisioning_key is configured")]
    NoKey,
    /// Its provisioning key is not the one the gateway runs with: every
    /// credential would change, which takes a restart.
    #[error("the provisioning key differs from the running one: restart to change it")]
    KeyChanged,
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The org generation now serving: 0 at start, one more per successful
    /// reload.
    pub generation: u64,
    /// Terminals and nodes added and removed.
    pub diff: Diff,
    /// Online sessions closed with `ORG_REMOVED`.
    pub sessions_closed: usize,
    /// Memberships ended (removed terminals' not counted), online or
    /// remembered for an offline terminal.
    pub memberships_ended: usize,
}

impl Outcome {
    /// One line for people: what changed.
    pub fn summary(&self) -> String {
        let d = &self.diff;
        format!(
            "org generation {}: terminals +{} -{}, nodes +{} -{}, {} sessions closed (ORG_REMOVED), {} memberships ended",
            self.generation,
            d.added_terminals.len(),
            d.removed_terminals.len(),
            d.added_nodes.len(),
            d.removed_nodes.len(),
            self.sessions_closed,
            self.memberships_ended,
        )
    }
}

/// The result of one reload attempt, as `reload.status` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The gateway process that wrote it.
    pub pid: u32,
    /// Reload attempts of this process so far, this one included.
    pub attempt: u64,
    /// The org generation serving after it.
    pub generation: u64,
    /// Whether the new org was swapped in.
    pub ok: bool,
    /// What changed, or why it was refused.
    pub message: String,
}

/// `<data_dir>/gateway.pid`.
pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.pid")
}

/// `<data_dir>/reload.status`.
pub fn status_path(data_dir: &Path) -> PathBuf {
    data_dir.join("reload.status")
}

/// Writes this process's id to the pid file and removes a stale status
/// file. Call once the gateway handles SIGHUP; remove with
/// [`remove_pid`] at a clean stop.
pub fn write_pid(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(status_path(data_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    replace(&pid_path(data_dir), &format!("{}\n", std::process::id()))
}

/// Removes the pid file if it is still this process's.
pub fn remove_pid(data_dir: &Path) {
    let path = pid_path(data_dir);
    if read_pid(data_dir).ok() == Some(std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The pid in the pid file.
pub fn read_pid(data_dir: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(pid_path(data_dir))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Replaces the status file with `status` (write then rename, so a reader
/// never sees half of it).
pub fn write_status(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let json = serde_json::to_string(status).expect("a Status serialises");
    replace(&status_path(data_dir), &format!("{json}\n"))
}

/// The status file, if there is a readable one.
pub fn read_status(data_dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(status_path(data_dir)).ok()?;
    serde_json::from_str(text.trim()).ok()
}

fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Why `ptt-gateway reload` could not report a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// No readable pid file: the gateway is not running on this data dir.
    #[error("no gateway pid file {path}: is the gateway running with this --data-dir? ({source})")]
    NoPid {
        /// The pid file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The pid file names a process that is not a `ptt-gateway serve` (a
    /// stale pid file after a crash, its number reused): not signalled.
    #[error("process {pid} of {path} is not a ptt-gateway (stale pid file?): not signalled")]
    NotGateway {
        /// The process.
        pid: u32,
        /// The pid file.
        path: PathBuf,
    },
    /// SIGHUP could not be sent.
    #[error("cannot signal gateway process {pid}: {source}")]
    Kill {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// No new status within the wait.
    #[error("gateway process {pid} wrote no reload status within {waited:?}")]
    Timeout {
        /// The process.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
}

/// Sends SIGHUP to the gateway serving `data_dir` and waits up to `wait`
/// for the status of the reload it starts. Call from the CLI.
pub fn signal(data_dir: &Path, wait: Duration) -> Result<Status, SignalError> {
    let pid = read_pid(data_dir).map_err(|source| SignalError::NoPid {
        path: pid_path(data_dir),
        source,
    })?;
    if !is_gateway(pid) {
        return Err(SignalError::NotGateway {
            pid,
            path: pid_path(data_dir),
        });
    }
    let before = read_status(data_dir)
        .filter(|s| s.pid == pid)
        .map_or(0, |s| s.attempt);
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| SignalError::Kill {
            pid,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a process id"),
        })?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        SignalError::Kill {
            pid,
            source: e.into(),
        }
    })?;
    let start = Instant::now();
    loop {
        if let Some(s) = read_status(data_dir).filter(|s| s.pid == pid && s.attempt > before) {
            return Ok(s);
        }
        if start.elapsed() >= wait {
            return Err(SignalError::Timeout { pid, waited: wait });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` runs `ptt-gateway serve`, by its command line in
/// /proc; true where there is no /proc to ask.
fn is_gateway(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let mut args = cmdline.split(|b| *b == 0);
            let program = args.next().unwrap_or_default();
            let name = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
            name.starts_with(b"ptt-gateway") && args.any(|a| a == b"serve")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && Path::new("/proc/self").exists() => {
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_round_trips_and_the_pid_file_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_status(dir.path()).is_none());
        let status = Status {
            pid: 7,
            attempt: 2,
            generation: 1,
            ok: false,
            message: "org file refused: x".into(),
        };
        write_status(dir.path(), &status).unwrap();
        assert_eq!(read_status(dir.path()), Some(status));
        // Starting removes a stale status and writes our pid.
        write_pid(dir.path()).unwrap();
        assert!(read_status(dir.path()).is_none());
        assert_eq!(read_pid(dir.path()).unwrap(), std::process::id());
        remove_pid(dir.path());
        assert!(read_pid(dir.path()).is_err());
        // Someone else's pid file is left alone.
        std::fs::write(pid_path(dir.path()), "1\n").unwrap();
        remove_pid(dir.path());
        assert_eq!(read_pid(dir.path()).unwrap(), 1);
    }

    #[test]
    fn a_pid_file_naming_another_program_is_not_signalled() {
        let dir = tempfile::tempdir().unwrap();
        // This test binary: alive, but no ptt-gateway.
        std::fs::write(pid_path(dir.path()), format!("{}\n", std::process::id())).unwrap();
        let e = signal(dir.path(), Duration::from_millis(10)).unwrap_err();
        assert!(matches!(e, SignalError::NotGateway { .. }), "{e}");
        assert!(!is_gateway(u32::MAX), "no such process");
    }

    #[test]
    fn signalling_without_a_pid_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = signal(dir.path(), Duration::from_millis(10)).unwrap_err();
        assert!(matches!(e, SignalError::NoPid { .. }), "{e}");
    }
}
