//! The murmurd process: a generated configuration in a fresh directory,
//! the SuperUser password set, then murmurd in the foreground as a plain
//! child process (no systemd, no Debian service).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where Debian's `mumble-server` package puts the daemon.
const DAEMON: &str = "murmurd";

/// The running server; stopped (SIGTERM, then waited for) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Control (TCP) and voice (UDP) address.
    pub addr: SocketAddr,
    /// The SuperUser password, for the connection that creates channels.
    pub password: String,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl Server {
    /// The process id, for /proc CPU samples.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The configuration: loopback only, database and certificate in `dir`,
/// no public registration, no Ice/D-Bus/Bonjour, room for `users`, Opus
/// always (opusthreshold 0), bandwidth that carries 20 ms Opus frames, and
/// no autoban or message rate limit (every client connects from
/// 127.0.0.1, which murmur's defaults would ban).
fn ini(dir: &Path, port: u16, users: usize) -> String {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false);
    format!(
        "database={db}\nhost=127.0.0.1\nport={port}\nusers={users}\nbandwidth=72000\n\
         opusthreshold=0\nautobanAttempts=0\nmessageburst=1000000\nmessagelimit=1000000\n\
         timeout=60\nice=\nbonjour=false\nregisterName=\nwelcometext=\nallowping=false\n\
         channelcountlimit=100000\n{uname}",
        db = dir.join("murmur.sqlite").display(),
        // As root murmurd drops to the package's user, who cannot write
        // the bench's directory; stay root (loopback, temporary files).
        uname = if root { "uname=root\n" } else { "" },
    )
}

fn free_port() -> anyhow::Result<u16> {
    // Murmur takes the same port for TCP and UDP: find one free in both.
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP on 127.0.0.1")
}

/// Starts murmurd for `users` clients in a fresh `dir`; returns once it
/// listens.
pub fn start(dir: &Path, users: usize) -> anyhow::Result<Server> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    // murmurd reads a relative database path against the ini file's
    // folder, not its working directory: give it absolute paths.
    let dir = &dir.canonicalize()?;
    let port = free_port()?;
    let ini_path = dir.join("murmur.ini");
    std::fs::write(&ini_path, ini(dir, port, users))?;
    let password = format!("bench-{}", std::process::id());
    let log = dir.join("murmurd.log");
    let status = Command::new(DAEMON)
        .arg("-ini")
        .arg(&ini_path)
        .args(["-supw", &password])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("supw.log"))?)
        .status()
        .context(
            "running murmurd -supw: is Debian's mumble-server installed (scripts/setup.sh)?",
        )?;
    if !status.success() {
        bail!(
            "murmurd -supw failed: see {}",
            dir.join("supw.log").display()
        );
    }
    let child = Command::new(DAEMON)
        .args(["-fg", "-ini"])
        .arg(&ini_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting murmurd")?;
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        password,
        log,
    };
    let start = Instant::now();
    // It listens, then generates its certificate (logins wait for it).
    while start.elapsed() < Duration::from_secs(60) {
        let text = std::fs::read_to_string(&server.log).unwrap_or_default();
        if text.contains("Server listening on") && std::net::TcpStream::connect(server.addr).is_ok()
        {
            return Ok(server);
        }
        if let Some(status) = server.child.try_wait()? {
            bail!("murmurd exited with {status}: see {}", server.log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "murmurd did not start within 60 s: see {}",
        server.log.display()
    )
}
