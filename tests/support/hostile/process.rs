//! The gateway process, and the watch on its memory and data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Terminal};

use super::ORG;
use crate::{bin, free_udp_port};

/// Memory at which the [`Watch`] kills the gateway: an attack that passed
/// [`RSS_BOUND`](super::RSS_BOUND) this far has failed already, and on a shared machine an
/// out-of-memory gateway would take other processes with it.
pub const RSS_KILL: u64 = 1024 * 1024 * 1024;

/// Data directory size at which the [`Watch`] kills the gateway.
pub const DISK_KILL: u64 = 512 * 1024 * 1024;

/// Longest wait for the [`SuiteLock`]: every hostile test of the suite,
/// failing ones included, run one after another.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Time between two samples of the [`Watch`]: short next to an attack's
/// seconds, long next to reading two small files.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// The real gateway binary serving [`ORG`] on a loopback port, with a data
/// directory of its own; killed when dropped. It logs at `info` (set
/// `HOSTILE_GATEWAY_LOG` to another `RUST_LOG` filter to see more).
#[derive(Debug)]
pub struct GatewayProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory (certificate, database).
    pub data: PathBuf,
    /// The provisioning key terminals' credentials derive from.
    pub key: ProvisioningKey,
    /// The gateway's certificate, for client configurations.
    pub roots: rustls::RootCertStore,
    child: Child,
    config: PathBuf,
    org: PathBuf,
    key_file: PathBuf,
    log: PathBuf,
    /// More `serve` flags, given again on a restart.
    args: Vec<String>,
    dir: tempfile::TempDir,
    _alone: SuiteLock,
}

impl GatewayProcess {
    /// Starts `ptt-gateway serve` on [`ORG`] with `config` as its TOML
    /// config file (sections only; empty for the defaults) and waits until
    /// it listens. Call inside a tokio runtime.
    ///
    /// Waits first until no other hostile test's gateway runs on this
    /// machine ([`SuiteLock`]).
    pub async fn start(config: &str) -> GatewayProcess {
        Self::start_with_args(config, &[]).await
    }

    /// As [`GatewayProcess::start`], with more `serve` flags.
    pub async fn start_with_args(config: &str, args: &[&str]) -> GatewayProcess {
        crate::init_tracing();
        let alone = SuiteLock::acquire().await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let org = dir.path().join("city.toml");
        std::fs::write(&org, ORG).expect("writing the org file");
        let key_file = dir.path().join("city.key");
        let key = ProvisioningKey::generate();
        key.save(&key_file).expect("writing the provisioning key");
        let config_file = dir.path().join("gateway.toml");
        std::fs::write(&config_file, config).expect("writing the config file");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("a loopback address");
        let data = dir.path().join("data");
        let log = dir.path().join("gateway.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = spawn(addr, &config_file, &org, &key_file, &data, &log, &args);
        let mut gw = GatewayProcess {
            addr,
            data,
            key,
            roots: rustls::RootCertStore::empty(),
            child,
            config: config_file,
            org,
            key_file,
            log,
            args,
            dir,
            _alone: alone,
        };
        gw.wait_listening().await;
        gw.roots = terminal::load_ca(&gw.data.join("cert.pem")).expect("the gateway's certificate");
        gw
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log_text().contains("gateway listening") {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                panic!("the gateway exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen within 20 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id, for /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The gateway's resident memory now, in bytes (0 once it exited).
    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }

    /// Bytes in the data directory now (database, WAL, certificate).
    pub fn data_bytes(&self) -> u64 {
        dir_bytes(&self.data)
    }

    /// `terminal`'s provisioned credential.
    pub fn credential(&self, terminal: u32) -> [u8; 32] {
        self.key.credential(TerminalId(terminal))
    }

    /// A client endpoint on a UDP socket of its own, trusting the gateway,
    /// as one handset has.
    pub fn endpoint(&self) -> quinn::Endpoint {
        terminal::endpoint("127.0.0.1:0".parse().expect("an address"), &self.roots)
            .expect("a client endpoint")
    }

    /// The reference client configuration with `transport` instead of the
    /// terminal's own (an attacker's windows and stream limits).
    pub fn client_config(&self, transport: quinn::TransportConfig) -> quinn::ClientConfig {
        let mut config = terminal::client_config(&self.roots).expect("a client configuration");
        config.transport_config(Arc::new(transport));
        config
    }

    /// Connects terminal `id` through the reference client, from a socket
    /// of its own.
    pub async fn terminal(&self, id: u32) -> Terminal {
        self.try_terminal(id)
            .await
            .unwrap_or_else(|e| panic!("terminal {id}: {e}\n{}", self.log_text()))
    }

    /// As [`GatewayProcess::terminal`], returning the error if it fails.
    pub async fn try_terminal(&self, id: u32) -> Result<Terminal, terminal::Error> {
        let endpoint = self.endpoint();
        Terminal::connect(
            &endpoint,
            self.addr,
            "localhost",
            TerminalId(id),
            &self.credential(id),
        )
        .await
    }

    /// Stops the gateway with SIGTERM and returns the counters it logs as
    /// it stops.
    pub async fn stop(&mut self) -> serde_json::Value {
        self.terminate().await;
        let log = self.log_text();
        let counters = log
            .lines()
            .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
            .next_back()
            .unwrap_or_else(|| panic!("no counters in the log:\n{log}"));
        serde_json::from_str(counters.trim()).expect("the counters are JSON")
    }

    async fn terminate(&mut self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "SIGTERM to the gateway");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                assert!(status.success(), "gateway exit status {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not stop on SIGTERM:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the gateway with SIGTERM and starts it again on the same
    /// address and data directory, as an operator's restart does.
    pub async fn restart(&mut self) {
        self.terminate().await;
        self.child = spawn(
            self.addr,
            &self.config,
            &self.org,
            &self.key_file,
            &self.data,
            &self.log,
            &self.args,
        );
        self.wait_listening().await;
    }

    /// Replaces the org file the gateway serves with `text` (write then
    /// rename, as an operator's deployment tool would), for a reload.
    pub fn rewrite_org(&self, text: &str) {
        let tmp = self.org.with_extension("new");
        std::fs::write(&tmp, text).expect("writing the new org file");
        std::fs::rename(&tmp, &self.org).expect("replacing the org file");
    }

    /// Runs `ptt-gateway reload --data-dir <data>`: it signals the gateway
    /// and waits for the reload's outcome.
    pub fn reload(&self) -> std::process::Output {
        Command::new(bin("ptt-gateway"))
            .arg("reload")
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .expect("running ptt-gateway reload")
    }

    /// Sends the gateway SIGHUP, as `kill -HUP` from an operator does.
    pub fn sighup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "SIGHUP to the gateway");
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gateway's database, opened beside the running gateway (as the
    /// `drill-report` command does), to check what it stored.
    pub fn store(&self) -> ptt_gateway::alert::Store {
        ptt_gateway::alert::Store::open(&self.data.join("gateway.db"))
            .expect("the gateway's database")
    }
}

/// One hostile test at a time on this machine.
///
/// Each attack saturates a core on purpose, and its bounds (an SOS stored
/// within 1 s) are about what the gateway does under that attack, not
/// under two attacks of two tests at once on a two-core CI runner; the
/// test runner runs tests in parallel processes, so the lock is a name in
/// the abstract Unix socket namespace: held while bound, released by the
/// kernel when the process ends however it ends.
#[derive(Debug)]
pub struct SuiteLock {
    _held: std::os::unix::net::UnixListener,
}

impl SuiteLock {
    /// Waits until no other process holds the lock, and takes it; panics
    /// after [`LOCK_WAIT`] (a test that hung holding it).
    pub async fn acquire() -> SuiteLock {
        use std::os::linux::net::SocketAddrExt;
        let name = std::os::unix::net::SocketAddr::from_abstract_name(b"ptt-tests-hostile-suite")
            .expect("an abstract socket name");
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match std::os::unix::net::UnixListener::bind_addr(&name) {
                Ok(held) => return SuiteLock { _held: held },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(
                        Instant::now() < deadline,
                        "another hostile test held the suite's lock for {LOCK_WAIT:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("taking the hostile suite's lock: {e}"),
            }
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    addr: SocketAddr,
    config: &Path,
    org: &Path,
    key: &Path,
    data: &Path,
    log: &Path,
    args: &[String],
) -> Child {
    // Appending: a restart keeps the first run's log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the gateway log");
    Command::new(bin("ptt-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", &addr.to_string(), "--org"])
        .arg(org)
        .arg("--provisioning-key")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        // No operations surface on the fixed default port unless the
        // test's config asks for one on its own port.
        .args(
            (!std::fs::read_to_string(config)
                .unwrap_or_default()
                .contains("[http]"))
            .then_some("--no-http"),
        )
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("HOSTILE_GATEWAY_LOG")
                .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting ptt-gateway")
}

/// Resident memory of process `pid` in bytes (`VmRSS` of
/// `/proc/<pid>/status`); 0 when the process is gone.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of the files under `dir`, recursively (0 if it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Samples the gateway's memory and data directory on a thread of its own
/// while an attack runs, and kills the gateway past [`RSS_KILL`] or
/// [`DISK_KILL`] so a failing attack cannot exhaust the machine.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Peaks>,
}

/// What a [`Watch`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    /// Resident memory when the watch started, bytes.
    pub rss_start: u64,
    /// Largest resident memory seen, bytes.
    pub rss_max: u64,
    /// Data directory size when the watch started, bytes.
    pub disk_start: u64,
    /// Largest data directory size seen, bytes.
    pub disk_max: u64,
    /// Whether the watch killed the gateway (it passed a kill limit).
    pub killed: bool,
}

impl Peaks {
    /// How much the data directory grew at most.
    pub fn disk_growth(&self) -> u64 {
        self.disk_max.saturating_sub(self.disk_start)
    }
}

impl Watch {
    /// Starts sampling `gw`.
    pub fn start(gw: &GatewayProcess) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (pid, data) = (gw.pid(), gw.data.clone());
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut p = Peaks {
                rss_start: rss_of(pid),
                disk_start: dir_bytes(&data),
                ..Peaks::default()
            };
            while !stopped.load(Ordering::Relaxed) {
                let (rss, disk) = (rss_of(pid), dir_bytes(&data));
                p.rss_max = p.rss_max.max(rss);
                p.disk_max = p.disk_max.max(disk);
                if !p.killed && (rss > RSS_KILL || disk > DISK_KILL) {
                    tracing::error!(rss, disk, "killing the gateway: past the safety limit");
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    p.killed = true;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            p
        });
        Watch { stop, thread }
    }

    /// Stops sampling and returns the peaks.
    pub fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the watch thread does not panic")
    }
}
