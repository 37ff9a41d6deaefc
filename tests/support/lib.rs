//! Shared helpers for end-to-end tests: locating the binaries, starting an
//! in-process gateway on a loopback port, connecting terminals, waiting
//! for the gateway's asynchronous effects with a bound.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod browser;
pub mod cluster;
pub mod console;
pub mod eventually;
mod gateway;
pub mod hostile;
pub mod nats;
pub mod org;
pub mod webtransport;
pub use eventually::{eventually, eventually_async};
pub use gateway::TestGateway;

/// Path of a workspace binary (`ptt-gateway`, `terminal-sim`), building it if
/// the test runner has not (scripts/test.sh builds them first).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building {name}");
    }
    path
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a loopback port");
    s.local_addr().expect("local address").port()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local address").port()
}

/// `n` distinct free loopback TCP ports: each is held until all are
/// picked, so the kernel cannot hand the same one out twice (as
/// [`free_tcp_port`] called twice in a row can).
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Waits until `path` contains `needle`, panicking with the file after
/// `timeout`.
pub fn wait_for_log(path: &Path, needle: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{needle:?} not logged within {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
