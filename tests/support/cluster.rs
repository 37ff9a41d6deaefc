//! A cluster of gateway processes for end-to-end tests: `n` `ptt-gateway
//! serve --node ... --nats ...` processes on loopback ports, sharing one
//! org, one provisioning key and one certificate, joined through a
//! [`NatsCluster`]. Nodes can be SIGKILLed and restarted on their data
//! directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Terminal};

use crate::nats::NatsCluster;
use crate::{bin, free_udp_port, wait_for_log};

/// Membership timings of the test clusters: fast, so that takeovers fit in
/// a test, and still well above the heartbeat.
pub const CLUSTER_TOML: &str =
    "[cluster]\nheartbeat_ms = 200\ntimeout_ms = 1000\ntakeover_ms = 1000\n";

/// One gateway node.
#[derive(Debug)]
pub struct Node {
    /// Its name (`a`, `b`, `c`...).
    pub name: String,
    /// Its QUIC port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    child: Option<Child>,
    runs: u32,
}

/// Gateway nodes of one cluster, killed on drop.
#[derive(Debug)]
pub struct GatewayCluster {
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    /// The provisioning key terminals' credentials derive from.
    pub key: ProvisioningKey,
    dir: PathBuf,
    /// Each node's NATS URLs.
    nats: Vec<String>,
}

impl GatewayCluster {
    /// Starts `n` nodes named `a`, `b`, ... in `dir` (org `org_toml`
    /// without its `[auth]` section, which this adds), joined through
    /// `nats`, and waits until every node hears all the others and their
    /// takeover time has passed.
    pub fn start(dir: &Path, n: usize, org_toml: &str, nats: &NatsCluster) -> GatewayCluster {
        Self::start_with(dir, n, org_toml, vec![nats.urls(); n])
    }

    /// As [`GatewayCluster::start`], node `i` knowing only NATS server `i`:
    /// killing that server cuts the node off from the cluster.
    pub fn start_pinned(
        dir: &Path,
        n: usize,
        org_toml: &str,
        nats: &NatsCluster,
    ) -> GatewayCluster {
        Self::start_with(dir, n, org_toml, (0..n).map(|i| nats.url(i)).collect())
    }

    fn start_with(dir: &Path, n: usize, org_toml: &str, nats: Vec<String>) -> GatewayCluster {
        let pinned = nats.iter().all(|urls| !urls.contains(','));
        let key = ProvisioningKey::generate();
        key.save(&dir.join("test.key")).expect("writing the key");
        std::fs::write(
            dir.join("org.toml"),
            format!("[auth]\nkey_file = \"test.key\"\n{org_toml}"),
        )
        .expect("writing the org");
        let config = if pinned {
            format!("{CLUSTER_TOML}discover_servers = false\n")
        } else {
            CLUSTER_TOML.to_owned()
        };
        std::fs::write(dir.join("gateway.toml"), config).expect("writing the config");
        let nodes = (0..n)
            .map(|i| {
                let name = ((b'a' + i as u8) as char).to_string();
                Node {
                    data: dir.join(format!("data-{name}")),
                    name,
                    port: free_udp_port(),
                    child: None,
                    runs: 0,
                }
            })
            .collect();
        let mut cluster = GatewayCluster {
            nodes,
            key,
            dir: dir.to_owned(),
            nats,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_settled();
        cluster
    }

    /// The certificate every node presents (the first node's).
    pub fn cert(&self) -> PathBuf {
        self.nodes[0].data.join("cert.pem")
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` with SIGTERM (a graceful shutdown) and waits for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its port and data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Node `i`'s latest log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Connects terminal `id` to node `i`.
    pub async fn terminal(&self, i: usize, id: u32) -> Terminal {
        let roots = terminal::load_ca(&self.cert()).expect("the cluster's certificate");
        let endpoint =
            terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).expect("a client endpoint");
        let addr = format!("127.0.0.1:{}", self.nodes[i].port).parse().unwrap();
        Terminal::connect(
            &endpoint,
            addr,
            "localhost",
            TerminalId(id),
            &self.key.credential(TerminalId(id)),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "terminal {id} connecting to node {}: {e}",
                self.nodes[i].name
            )
        })
    }

    /// Waits until every running node's last membership change shows all
    /// running nodes live, then for the takeover time.
    pub fn wait_settled(&self) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        self.wait_views(&running, &running);
    }

    /// Waits until each node of `nodes` last saw exactly `live` (indices)
    /// live, then for the takeover time.
    pub fn wait_views(&self, nodes: &[usize], live: &[usize]) {
        let running: Vec<&str> = live.iter().map(|&i| self.nodes[i].name.as_str()).collect();
        let start = Instant::now();
        'wait: loop {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the cluster did not settle:\n{}",
                (0..self.nodes.len())
                    .map(|i| self.log(i))
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
            for &i in nodes {
                let log = self.log(i);
                let Some(last) = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("cluster membership changed"))
                else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'wait;
                };
                let live = last.split("live=").nth(1).unwrap_or("");
                let live = live.split(']').next().unwrap_or("");
                let count = live.matches('"').count() / 2;
                if count != running.len()
                    || !running.iter().all(|n| live.contains(&format!("\"{n}\"")))
                {
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'wait;
                }
            }
            break;
        }
        // Takeover (1 s in CLUSTER_TOML) plus a margin.
        std::thread::sleep(Duration::from_millis(1300));
    }

    fn log_path(&self, i: usize) -> PathBuf {
        let node = &self.nodes[i];
        self.dir
            .join(format!("gateway-{}-{}.log", node.name, node.runs))
    }

    fn spawn(&mut self, i: usize) {
        self.nodes[i].runs += 1;
        let log = self.log_path(i);
        let node = &self.nodes[i];
        let mut cmd = Command::new(bin("ptt-gateway"));
        cmd.args(["serve", "--config"])
            .arg(self.dir.join("gateway.toml"))
            .args(["--listen", &format!("127.0.0.1:{}", node.port), "--no-http"])
            .args(["--node", &node.name, "--nats", &self.nats[i], "--org"])
            .arg(self.dir.join("org.toml"))
            .arg("--data-dir")
            .arg(&node.data)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).expect("a log file"));
        if i > 0 {
            // Every node presents the first node's certificate.
            cmd.arg("--cert")
                .arg(self.cert())
                .arg("--key")
                .arg(self.nodes[0].data.join("key.pem"));
        }
        let child = cmd.spawn().expect("starting ptt-gateway");
        self.nodes[i].child = Some(child);
        wait_for_log(&log, "gateway listening", Duration::from_secs(30));
    }
}

impl Drop for GatewayCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
