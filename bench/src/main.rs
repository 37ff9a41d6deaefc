//! `ptt-bench`: runs one workload against (a) a raw UDP fan-out relay
//! baseline and (b) the gateway, and reports what each cost per delivered
//! frame, and the ratio.
//!
//! It generates a city; starts `baseline-relay` on a loopback port and
//! drives it with plain UDP sockets in this process (same groups, members,
//! consoles and talk pattern as the gateway run); then starts `ptt-gateway`
//! and drives it with `terminal-sim run --gateway-pid`. Each relay's CPU
//! time is read from /proc over the measured phase, independent of how fast
//! the harness is. The gateway's counters and relay-latency histograms come
//! from its log line at SIGTERM: `internal_latency_ms` is frame read to
//! every receiver's packet handed to the socket (one frame in 64),
//! `queued_latency_ms` frame read to queued in every receiver's connection
//! (every frame). Use the release build: the binaries are
//! looked up next to this one.
//!
//! The gateway runs once per listener kind (`--listeners srtp,datagram`,
//! both by default, see [`kinds`]): terminals taking voice as SRTP beside
//! QUIC, then as QUIC DATAGRAM frames, each on a fresh gateway.

mod cluster;
mod consoles;
mod kinds;
mod mumble;
mod udpload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark the PTT gateway against a raw UDP relay baseline on a loopback workload"
)]
struct Args {
    /// Workload: `voice-smoke` (20 talking units of a 300-unit city, 10 s),
    /// `city-voice-peak` (a 7,019-unit city connected, 5% of its units
    /// talking at once, 30 s), `console-listeners` (the same fan-out to
    /// native and to WebTransport console listeners, see --listeners and
    /// --rounds; no baseline), or any terminal-sim scenario name or TOML file
    /// (with --groups, --units, --duration; no baseline unless it is a
    /// voice-steady pattern).
    #[arg(long, default_value = "voice-smoke")]
    workload: String,
    /// Unit groups exercised (overrides the workload's).
    #[arg(long)]
    groups: Option<usize>,
    /// Seconds of measured traffic (overrides the workload's).
    #[arg(long)]
    duration: Option<u64>,
    /// Units in the generated city (overrides the workload's).
    #[arg(long)]
    units: Option<usize>,
    /// Skip the baseline (gateway only).
    #[arg(long)]
    no_baseline: bool,
    /// Where to write the JSON report.
    #[arg(long)]
    report: PathBuf,
    /// Working directory for the city, certificate and logs.
    #[arg(long, default_value = "target/bench")]
    workdir: PathBuf,
    /// Gateway configuration file (`ptt-gateway serve --config`), to
    /// measure a setting against the defaults.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// Milliseconds added to every round trip of the gateway run's
    /// terminals (`terminal-sim run --delay-ms`), as on a cellular path.
    /// The baseline's load is not delayed: use with --no-baseline.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Threads of the gateway run's terminal-sim (`terminal-sim run
    /// --threads`).
    #[arg(long, default_value_t = 1)]
    harness_threads: u16,
    /// Run the gateway twice, recording off then on (`[recording]
    /// enabled`), and report what recording costs: CPU per delivered
    /// frame, internal latency, recorder drops, disk bytes per hour of
    /// talk. Without it the gateway runs with its configuration (recording
    /// on by default).
    #[arg(long)]
    record: bool,
    /// A number: console terminals of the `console-listeners` workload
    /// (browser consoles over WebTransport next to native listeners, every
    /// console in every group; default 40). Or the listener kinds the
    /// gateway runs with, one fresh gateway each on the same workload:
    /// `srtp` (terminal-sim `--media srtp`), `datagram` (`--media
    /// datagram`), default `srtp,datagram`. --record runs one kind:
    /// `srtp`, or the first given; --nodes and console-listeners drive
    /// their terminals themselves and take no kind.
    #[arg(long, value_parser = kinds::parse_listeners)]
    listeners: Option<kinds::Listeners>,
    /// Rounds of the `console-listeners` workload: each runs it natively
    /// and over WebTransport (order alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Another voice server run on the same plan after the baseline and
    /// before the gateway: `mumble` starts Debian's murmurd (package
    /// mumble-server) and drives it over Mumble's protocol (TLS control,
    /// OCB2-AES128 UDP voice). Voice-steady workloads only.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Run only the peer (no baseline, no gateway): for sweeping the
    /// peer's client count.
    #[arg(long, requires = "peer")]
    peer_only: bool,
    /// Gateway nodes: more than 1 runs the workload (voice-steady pattern)
    /// on one gateway, then on a cluster of this many nodes joined through
    /// three routed NATS servers (`nats-server` on the PATH), driven by the
    /// bench itself with terminals spread over the nodes; the report's
    /// `cluster` key has both (see bench/src/cluster.rs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=26))]
    nodes: u16,
}

/// A voice server compared with the gateway (`--peer`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Peer {
    /// Mumble's server, murmurd 1.3 from Debian's mumble-server.
    Mumble,
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release --bins`",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(log: &Path, needle: &str, gateway: &mut Child) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return Ok(());
        }
        if let Some(status) = gateway.try_wait()? {
            bail!("gateway exited with {status}: see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("gateway did not start within 30 s: see {}", log.display())
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A named workload: the city, how much of it talks, for how long.
#[derive(Debug, Clone)]
struct Workload {
    name: String,
    /// terminal-sim scenario the gateway run uses.
    scenario: String,
    units: usize,
    groups: usize,
    duration_s: u64,
    /// Whether the baseline can run it (voice-steady talk pattern).
    baseline: bool,
}

impl Workload {
    fn resolve(args: &Args) -> Workload {
        let mut w = match args.workload.as_str() {
            "voice-smoke" => Workload {
                name: "voice-smoke".into(),
                scenario: "voice-steady".into(),
                units: 300,
                groups: 20,
                duration_s: 10,
                baseline: true,
            },
            "city-voice-peak" => Workload {
                name: "city-voice-peak".into(),
                scenario: "city-voice-peak".into(),
                units: 7019,
                groups: 7019,
                duration_s: 30,
                baseline: true,
            },
            other => Workload {
                name: other.into(),
                scenario: other.into(),
                units: 300,
                groups: 50,
                duration_s: 30,
                baseline: matches!(other, "voice-steady" | "city-voice-peak"),
            },
        };
        if let Some(g) = args.groups {
            w.groups = g;
        }
        if let Some(u) = args.units {
            w.units = u;
        }
        if let Some(d) = args.duration {
            w.duration_s = d;
        }
        w.units = w.units.max(w.groups);
        w.baseline &= !args.no_baseline;
        w
    }
}

/// Peak resident memory of a process, MiB (VmHWM).
fn peak_rss_mb(pid: u32) -> f64 {
    proc_status_mb(pid, "VmHWM:")
}

/// Resident memory of a process now, MiB (VmRSS).
fn rss_mb(pid: u32) -> f64 {
    proc_status_mb(pid, "VmRSS:")
}

fn proc_status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(p: &ptt_terminal_sim::report::Percentiles) -> serde_json::Value {
    serde_json::json!({ "p50": p.p50, "p90": p.p90, "p99": p.p99, "p999": p.p999, "max": p.max })
}

/// Runs the raw UDP relay baseline on the workload.
fn baseline(args: &Args, w: &Workload, org: &Path) -> anyhow::Result<serde_json::Value> {
    let plan = ptt_terminal_sim::scenario::Plan::new(org, w.groups)?;
    let spec = ptt_terminal_sim::scenario::Spec::resolve(&w.scenario)?;
    let port = free_port()?;
    let log = args.workdir.join("baseline-relay.log");
    let child = Command::new(bin("baseline-relay")?)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting baseline-relay")?;
    let mut relay = Gateway(child);
    wait_for(&log, "listening", &mut relay.0)?;
    let pid = relay.0.id();
    let mut samples = Vec::new();
    let runtime = tokio::runtime::Runtime::new()?;
    let measured = runtime.block_on(udpload::run(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &plan,
        udpload::Pattern {
            burst_ms: spec.burst_ms,
            gap_ms: spec.gap_ms,
            talk_share: spec.talk_share,
        },
        Duration::from_secs(w.duration_s),
        || samples.push(ptt_terminal_sim::report::sample_process(pid)),
    ))?;
    let rss = peak_rss_mb(pid);
    drop(relay);
    relay_summary("the baseline relay", &samples, &measured, rss)
}

/// A relay process's figures over the measured phase: its CPU (two /proc
/// samples, start and end) per delivered frame, delivery and latency as
/// its listeners saw them. The baseline's and the peers' reports.
fn relay_summary(
    what: &str,
    samples: &[std::io::Result<ptt_terminal_sim::report::ProcessSample>],
    measured: &udpload::Measured,
    rss: f64,
) -> anyhow::Result<serde_json::Value> {
    let cpu = match (samples, samples.len()) {
        ([Ok(a), Ok(b)], 2) => b.cpu_seconds - a.cpu_seconds,
        _ => bail!("could not read {what}'s CPU time from /proc"),
    };
    let delivered_ratio = measured.received as f64 / measured.expected.max(1) as f64;
    Ok(serde_json::json!({
        "cpu_seconds": cpu,
        "frames_sent": measured.frames_sent,
        "frames_expected": measured.expected,
        "frames_delivered": measured.received,
        "cpu_us_per_frame": cpu * 1e6 / measured.received.max(1) as f64,
        "delivered_ratio": delivered_ratio,
        "latency_ms": ms(&measured.latency),
        "rss_mb": rss,
    }))
}

/// Runs the gateway on the workload; returns the terminal-sim report with
/// the gateway's counters, and the gateway's summary.
fn gateway(
    args: &Args,
    w: &Workload,
    org: &Path,
    config: Option<&Path>,
    kind: kinds::Kind,
) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
    let terminal_sim = bin("terminal-sim")?;
    // A terminal-sim without `--media` does QUIC DATAGRAM voice only.
    let media_flag = kinds::terminal_sim_has_media(&terminal_sim);
    if !media_flag && kind != kinds::Kind::Datagram {
        bail!(
            "this terminal-sim has no `run --media`: it cannot run {} listeners (use --listeners datagram)",
            kind.name()
        );
    }
    let port = free_port()?;
    let data = args.workdir.join("gateway");
    // A fresh gateway every run: alerts stored by an earlier run would be
    // forwarded to this run's terminals and skew its figures.
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    // The default kind's files keep their old names.
    let suffix = if kind == kinds::Kind::DEFAULT {
        String::new()
    } else {
        format!("-{}", kind.name())
    };
    let log = args.workdir.join(format!("gateway{suffix}.log"));
    let mut command = Command::new(bin("ptt-gateway")?);
    if let Ok(n) = std::env::var("BENCH_GATEWAY_WORKERS") {
        command.env("TOKIO_WORKER_THREADS", n);
    }
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(org)
        .arg("--data-dir")
        .arg(&data);
    if let Some(config) = config.or(args.gateway_config.as_deref()) {
        command.arg("--config").arg(config);
    }
    let child = command
        .env("RUST_LOG", "info,quinn=warn")
        .stderr(std::fs::File::create(&log).context("creating the gateway log")?)
        .spawn()
        .context("starting ptt-gateway")?;
    let mut gateway = Gateway(child);
    wait_for(&log, "gateway listening", &mut gateway.0)?;
    // The gateway with its org, groups and database open and nobody
    // connected: what the connections' memory is measured from.
    let rss_start = rss_mb(gateway.0.id());

    let sim_report = args.workdir.join(format!("terminal-sim{suffix}.json"));
    let mut sim = Command::new(&terminal_sim);
    sim.args(["run", "--gateway", &format!("127.0.0.1:{port}")]);
    if media_flag {
        sim.args(["--media", kind.name()]);
    }
    let status = sim
        .arg("--ca")
        .arg(data.join("cert.pem"))
        .arg("--org")
        .arg(org)
        .args(["--scenario", &w.scenario])
        .args(["--duration", &w.duration_s.to_string()])
        .args(["--groups", &w.groups.to_string()])
        .args(["--gateway-pid", &gateway.0.id().to_string()])
        .arg("--report")
        .arg(&sim_report)
        .arg("--plots")
        .arg(args.workdir.join("plots"))
        .args(["--delay-ms", &args.delay_ms.to_string()])
        .args(["--threads", &args.harness_threads.to_string()])
        .status()?;
    let rss = peak_rss_mb(gateway.0.id());
    let rss_end = rss_mb(gateway.0.id());
    drop(gateway);
    if !status.success() {
        bail!("terminal-sim failed");
    }
    let mut report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sim_report)?)?;
    // The gateway logs its counters when it stops: where loss happened, if
    // any, and its relay latency.
    let text = std::fs::read_to_string(&log)?;
    let counters = text
        .lines()
        .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
        .next_back()
        .and_then(|rest| serde_json::from_str::<serde_json::Value>(rest.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    report["gateway_counters"] = counters.clone();
    let voice = &report["voice"];
    let us = |h: &str, k: &str| counters[h][k].as_f64().unwrap_or(0.0) / 1000.0;
    let ms = |h: &str| serde_json::json!({ "p50": us(h, "p50_us"), "p99": us(h, "p99_us"), "p999": us(h, "p999_us"), "max": us(h, "max_us"), "samples": counters[h]["count"] });
    // Where deliveries that never arrived went: the gateway's own drops
    // (quinn's drop-oldest buffer, refused sends), the kernel's UDP receive
    // errors on loopback, and the rest, which is the harness falling behind.
    let expected = voice["frames_expected"].as_u64().unwrap_or(0);
    let received = voice["frames_received"].as_u64().unwrap_or(0);
    let missing = expected.saturating_sub(received);
    // Deliveries go out as DATAGRAM frames (counted when sessions end) or
    // as SRTP packets the socket took (`media_packets_out`, which counts
    // the SRTCP answers too, 0 before the media plane); SRTP packets it
    // did not take are in the difference.
    let srtp_out = counters["media_packets_out"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(counters["media_rtcp_out"].as_u64().unwrap_or(0));
    let by_gateway = counters["voice_delivered"]
        .as_u64()
        .zip(counters["voice_datagrams_sent"].as_u64())
        .map(|(d, s)| {
            d.saturating_sub(s + srtp_out) + counters["voice_send_failed"].as_u64().unwrap_or(0)
        });
    let by_kernel = report["kernel"]["udp_rcvbuf_errors"].as_u64();
    let loss = serde_json::json!({
        "missing": missing,
        "dropped_by_gateway": by_gateway,
        "kernel_udp_receive_errors": by_kernel,
        "in_harness": by_gateway.zip(by_kernel).map(|(g, k)| missing.saturating_sub(g + k)),
    });
    let connections = report["connections"]["established"]
        .as_f64()
        .unwrap_or(1.0)
        .max(1.0);
    let summary = serde_json::json!({
        "cpu_seconds": report["gateway"]["cpu_seconds"],
        "frames_delivered": voice["frames_received"],
        "cpu_us_per_frame": report["gateway"]["cpu_us_per_delivered_frame"],
        "delivered_ratio": voice["delivered_ratio"],
        "latency_ms": voice["latency_ms"],
        "internal_latency_ms": ms("socket_latency_us"),
        "queued_latency_ms": ms("relay_latency_us"),
        "rss_mb": rss,
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        // Peak memory above the empty gateway's, per connection: includes
        // what the connection ramp's handshakes held at the time.
        "rss_kb_per_connection": (rss - rss_start) * 1024.0 / connections,
        // Memory above the empty gateway's at the end, per connection.
        "rss_end_kb_per_connection": (rss_end - rss_start) * 1024.0 / connections,
        "dropped_by_gateway": by_gateway,
        // ACK frames the gateway received per frame it delivered: what
        // listeners' acknowledgements cost it (transport.ack_every_packets).
        "acks_per_delivered_frame": counters["acks_received"]
            .as_f64()
            .zip(voice["frames_received"].as_f64().filter(|f| *f > 0.0))
            .map(|(a, f)| a / f),
        "loss": loss,
        "kernel": report["kernel"],
        // Full handshakes cost a certificate signature; resumed ones do not.
        "handshakes": {
            "accepted": counters["connections_accepted"],
            "resumed": counters["tls_tickets_accepted"],
        },
        "recording": recording_figures(&data.join("recordings"), &counters),
        "media": kind.name(),
        // UDP datagrams the terminals sent in the measured phase, less the
        // talkers' voice frames, per delivered frame: what listening costs
        // a handset's radio (issue 15: at most 0.05).
        "listener_uplink_packets_per_frame": kinds::uplink_per_frame(&report),
        // How the terminals' voice travelled at the end (terminal-sim's
        // `media` section: srtp, datagram, fell_back).
        "terminals_media": {
            "srtp": report["media"]["srtp"],
            "datagram": report["media"]["datagram"],
            "fell_back": report["media"]["fell_back"],
        },
        // The gateway's own loss and media counters, for the targets.
        "counters": {
            "voice_send_failed": counters["voice_send_failed"],
            "media_send_dropped": counters["media_send_dropped"],
            "media_packets_out": counters["media_packets_out"],
            "media_voice_in": counters["media_voice_in"],
            "media_sessions": counters["media_sessions"],
            "media_fallbacks": counters["media_fallbacks"],
            "media_rejected": counters["media_rejected"],
            "media_rtcp_in": counters["media_rtcp_in"],
            "media_rtcp_out": counters["media_rtcp_out"],
            "voice_in": counters["voice_in"],
            "voice_delivered": counters["voice_delivered"],
        },
    });
    Ok((report, summary))
}

/// Runs `--peer mumble` on the workload ([`mumble`]): murmurd's CPU per
/// delivered frame, delivery and latency, as the baseline's.
fn mumble_peer(args: &Args, w: &Workload, org: &Path) -> anyhow::Result<serde_json::Value> {
    if !w.baseline {
        bail!("--peer mumble runs voice-steady workloads only (voice-smoke, city-voice-peak, voice-steady)");
    }
    let plan = ptt_terminal_sim::scenario::Plan::new(org, w.groups)?;
    let spec = ptt_terminal_sim::scenario::Spec::resolve(&w.scenario)?;
    let clients = mumble::clients(&plan);
    eprintln!(
        "peer mumble: {clients} clients (one per listener and group) in {} channels",
        plan.groups.len()
    );
    let server = mumble::server::start(&args.workdir.join("mumble"), clients + 16)?;
    let pid = server.pid();
    let mut samples = Vec::new();
    // Where frames that never arrived may have gone: full UDP receive
    // buffers (the whole machine's count), and the harness's own CPU.
    let (mut kernel, mut harness) = (Vec::new(), Vec::new());
    let runtime = tokio::runtime::Runtime::new()?;
    let (measured, extra) = runtime.block_on(mumble::run(
        server.addr,
        &server.password,
        &plan,
        udpload::Pattern {
            burst_ms: spec.burst_ms,
            gap_ms: spec.gap_ms,
            talk_share: spec.talk_share,
        },
        Duration::from_secs(w.duration_s),
        || {
            samples.push(ptt_terminal_sim::report::sample_process(pid));
            kernel.push(ptt_terminal_sim::report::udp_buffer_errors());
            harness.push(ptt_terminal_sim::report::sample_process(std::process::id()));
        },
    ))?;
    let rss = peak_rss_mb(pid);
    drop(runtime);
    drop(server);
    let mut summary = relay_summary("murmurd", &samples, &measured, rss)?;
    summary["clients"] = extra.clients.into();
    summary["connect_seconds"] = extra.connect_seconds.into();
    // Voice murmur sent over TCP instead of UDP (the run fails if any).
    summary["udp_tunnel_messages"] = extra.tunnelled.into();
    summary["udp_refused"] = extra.refused.into();
    summary["control_connections_dropped"] = extra.dropped.into();
    summary["server"] = "murmurd 1.3 (Debian mumble-server)".into();
    if let [Some((a, _)), Some((b, _))] = kernel[..] {
        summary["kernel_udp_rcvbuf_errors"] = b.saturating_sub(a).into();
    }
    if let [Ok(a), Ok(b)] = &harness[..] {
        summary["harness_cpu_seconds"] = (b.cpu_seconds - a.cpu_seconds).into();
    }
    Ok(summary)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.workload == "console-listeners" {
        return console_listeners(&args);
    }
    let w = Workload::resolve(&args);
    std::fs::create_dir_all(&args.workdir)?;
    let org = args.workdir.join("city.toml");
    let status = Command::new(bin("terminal-sim")?)
        .args(["gen-city", "--units", &w.units.to_string(), "--out"])
        .arg(&org)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("gen-city failed");
    }
    if args.nodes > 1 {
        return cluster::run(&args, &w, &org);
    }

    let baseline = if w.baseline && !args.peer_only {
        eprintln!(
            "baseline: raw UDP relay, {} groups, {} s",
            w.groups, w.duration_s
        );
        Some(baseline(&args, &w, &org)?)
    } else {
        None
    };
    if let Some(b) = &baseline {
        // Kept even if the gateway run fails or is cut short.
        let partial =
            serde_json::json!({ "workload": w.name, "machine": machine(), "baseline": b });
        std::fs::write(&args.report, serde_json::to_string_pretty(&partial)? + "\n")?;
        eprintln!(
            "baseline: {:.2} us CPU per delivered frame, delivered {:.4}",
            b["cpu_us_per_frame"].as_f64().unwrap_or(0.0),
            b["delivered_ratio"].as_f64().unwrap_or(0.0)
        );
    }
    let peer = match args.peer {
        Some(Peer::Mumble) => {
            eprintln!("peer mumble: {} groups, {} s", w.groups, w.duration_s);
            let m = mumble_peer(&args, &w, &org)?;
            eprintln!(
                "peer mumble: {} clients, {:.2} us CPU per delivered frame, delivered {:.4}",
                m["clients"],
                m["cpu_us_per_frame"].as_f64().unwrap_or(0.0),
                m["delivered_ratio"].as_f64().unwrap_or(0.0)
            );
            let partial = serde_json::json!({ "workload": w.name, "machine": machine(), "baseline": baseline, "peer": { "mumble": m } });
            std::fs::write(&args.report, serde_json::to_string_pretty(&partial)? + "\n")?;
            Some(serde_json::json!({ "mumble": m }))
        }
        None => None,
    };
    let kinds = kinds::chosen(args.listeners.as_ref());
    // The kind `gateway` and `ratio` stand for; modes running one gateway
    // run it alone.
    let primary = kinds::primary(&kinds);
    let mut by_kind = serde_json::Map::new();
    // With --record: recording off, then on; the second is the report's
    // gateway run.
    let mut recording_off = None;
    let (sim, gw) = if args.peer_only {
        (serde_json::Value::Null, serde_json::Value::Null)
    } else if args.record {
        if args.gateway_config.is_some() {
            bail!("--record writes its own gateway configurations: drop --gateway-config");
        }
        let mut runs = Vec::new();
        for enabled in [false, true] {
            let config = args.workdir.join(format!("recording-{enabled}.toml"));
            std::fs::write(&config, format!("[recording]\nenabled = {enabled}\n"))?;
            eprintln!(
                "gateway, recording {}: {} groups, {} s",
                if enabled { "on" } else { "off" },
                w.groups,
                w.duration_s
            );
            runs.push(gateway(&args, &w, &org, Some(&config), primary)?);
        }
        let on = runs.pop().expect("two runs");
        recording_off = runs.pop().map(|(_, gw)| gw);
        on
    } else {
        // One fresh gateway per listener kind on the same workload.
        let mut primary_run = None;
        for &kind in &kinds {
            eprintln!(
                "gateway, {} listeners: {} groups, {} s",
                kind.name(),
                w.groups,
                w.duration_s
            );
            let (sim, gw) = gateway(&args, &w, &org, None, kind)?;
            by_kind.insert(
                kind.name().into(),
                kinds::summary(kind, &gw, baseline.as_ref()),
            );
            if kind == primary {
                primary_run = Some((sim, gw));
            }
        }
        primary_run.expect("the primary kind is one of the kinds run")
    };
    if gw.is_object() && by_kind.is_empty() {
        by_kind.insert(
            primary.name().into(),
            kinds::summary(primary, &gw, baseline.as_ref()),
        );
    }
    let ratio = kinds::ratio(baseline.as_ref(), &gw);
    let targets = gw
        .is_object()
        .then(|| kinds::targets(&w.name, primary, &gw, baseline.as_ref()));
    let report = serde_json::json!({
        "workload": w.name,
        "scenario": w.scenario,
        "units": w.units,
        "groups": w.groups,
        "duration_s": w.duration_s,
        "machine": machine(),
        "baseline": baseline,
        "gateway": gw,
        "ratio": ratio,
        "kinds": by_kind,
        "targets": targets,
        "recording_off": recording_off,
        "terminal_sim": sim,
        "peer": peer,
        // Gateway CPU per delivered frame over murmur's (below 1: the
        // gateway spends less).
        "ratio_gateway_mumble": peer.as_ref().and_then(|p| {
            let m = p["mumble"]["cpu_us_per_frame"].as_f64()?;
            let g = gw["cpu_us_per_frame"].as_f64()?;
            (m > 0.0).then(|| g / m)
        }),
    });
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)? + "\n")?;
    let f = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    println!(
        "workload {} ({} groups, {} s) on {}",
        w.name,
        w.groups,
        w.duration_s,
        machine()
    );
    println!(
        "{:<10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "", "CPU us/frame", "delivered", "p50 ms", "p99 ms", "p999 ms", "RSS MiB"
    );
    for (name, r) in [
        ("baseline", report["baseline"].clone()),
        ("mumble", report["peer"]["mumble"].clone()),
        ("gateway", report["gateway"].clone()),
    ] {
        // Workloads without voice (alerts, storms) have no row.
        if r.is_null() || r["frames_delivered"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        println!(
            "{:<10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>8}",
            name,
            f(&r["cpu_us_per_frame"]),
            f(&r["delivered_ratio"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p99"]),
            f(&r["latency_ms"]["p999"]),
            f(&r["rss_mb"]),
        );
    }
    match ratio {
        Some(r) => println!("ratio gateway/baseline CPU per frame: {r:.2}"),
        None if report["baseline"].is_object() => println!(
            "ratio gateway/baseline CPU per frame: not measurable (the baseline used less \
             than one 10 ms clock tick: run a longer or larger workload)"
        ),
        None => {}
    }
    kinds::print(&report);
    if let Some(r) = report["ratio_gateway_mumble"].as_f64() {
        println!("ratio gateway/mumble CPU per frame: {r:.2}");
    }
    if report["gateway"].is_object() {
        let g = &report["gateway"];
        println!(
            "gateway memory: {} MiB empty, {} MiB peak, {} MiB at the end; per connection {} KB peak, {} KB at the end",
            f(&g["rss_start_mb"]),
            f(&g["rss_mb"]),
            f(&g["rss_end_mb"]),
            f(&g["rss_kb_per_connection"]),
            f(&g["rss_end_kb_per_connection"]),
        );
        println!(
            "gateway handshakes: {} completed, {} of them resumed from a TLS ticket",
            g["handshakes"]["accepted"], g["handshakes"]["resumed"]
        );
        if g["acks_per_delivered_frame"].is_number() {
            println!(
                "gateway ACK frames received per delivered frame: {}",
                f(&g["acks_per_delivered_frame"])
            );
        }
    }
    if report["gateway"]["frames_delivered"].as_u64().unwrap_or(0) > 0 {
        let g = &report["gateway"];
        println!(
            "gateway internal relay latency p99 {} ms to every receiver's packet handed to the socket ({} frames sampled), {} ms to queued in every receiver's connection (every frame)",
            f(&g["internal_latency_ms"]["p99"]),
            g["internal_latency_ms"]["samples"],
            f(&g["queued_latency_ms"]["p99"])
        );
        let l = &report["gateway"]["loss"];
        println!(
            "gateway run: {} deliveries missing: {} dropped by the gateway, {} by the kernel, {} in the harness",
            l["missing"], l["dropped_by_gateway"], l["kernel_udp_receive_errors"], l["in_harness"]
        );
    }
    if let Some(off) = &report["recording_off"].as_object() {
        let on = &report["gateway"];
        println!(
            "recording off: {} us CPU per delivered frame, internal p99 {} ms; on: {} us, {} ms",
            f(&off["cpu_us_per_frame"]),
            f(&off["internal_latency_ms"]["p99"]),
            f(&on["cpu_us_per_frame"]),
            f(&on["internal_latency_ms"]["p99"]),
        );
        let r = &on["recording"];
        println!(
            "recorder: {} bursts, {} frames dropped, {} bytes on disk, {} bytes per hour of talk",
            r["bursts_written"],
            r["frames_dropped"],
            r["bytes"],
            f(&r["bytes_per_talk_hour"])
        );
    }
    println!("report: {}", args.report.display());
    Ok(())
}

/// The `console-listeners` workload ([`consoles`]): the same fan-out to
/// native and to WebTransport listeners; the report and the table.
fn console_listeners(args: &Args) -> anyhow::Result<()> {
    let shape = consoles::Shape {
        groups: args.groups.unwrap_or(10),
        listeners: args
            .listeners
            .as_ref()
            .and_then(kinds::Listeners::count)
            .unwrap_or(40),
        duration_s: args.duration.unwrap_or(15),
        threads: usize::from(args.harness_threads),
        rounds: args.rounds,
    };
    let runs = consoles::run(&args.workdir, shape)?;
    let report = serde_json::json!({
        "workload": "console-listeners",
        "groups": shape.groups,
        "listeners": shape.listeners,
        "duration_s": shape.duration_s,
        "machine": machine(),
        "native": runs["native"],
        "web": runs["web"],
        "ratio_web_native": runs["ratio_web_native"],
        "ratios": runs["ratios"],
        "rounds": runs["rounds"],
    });
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)? + "\n")?;
    let f = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    println!(
        "workload console-listeners ({} groups, {} listeners in each, {} s, {} rounds) on {}",
        shape.groups,
        shape.listeners,
        shape.duration_s,
        shape.rounds,
        machine()
    );
    println!(
        "{:<13} {:>12} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "listeners", "CPU us/frame", "delivered", "p50 ms", "p99 ms", "p999 ms", "RSS MiB"
    );
    let rows = report["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, r)| ["native", "web"].map(|t| (format!("{t} r{}", i + 1), r[t].clone())))
        .chain(["native", "web"].map(|t| (format!("{t} median"), report[t].clone())));
    for (name, r) in rows {
        println!(
            "{:<13} {:>12} {:>10} {:>9} {:>9} {:>9} {:>8}",
            name,
            f(&r["cpu_us_per_frame"]),
            f(&r["delivered_ratio"]),
            f(&r["latency_ms"]["p50"]),
            f(&r["latency_ms"]["p99"]),
            f(&r["latency_ms"]["p999"]),
            f(&r["rss_mb"]),
        );
    }
    for name in ["native", "web"] {
        let r = &report[name];
        println!(
            "{name}: {} listeners over WebTransport, {} frames sent, {} of {} deliveries received, gateway CPU {} s",
            r["listeners_over_webtransport"],
            r["frames_sent"],
            r["frames_delivered"],
            r["frames_expected"],
            f(&r["cpu_seconds"])
        );
    }
    match report["ratio_web_native"].as_f64() {
        Some(r) => println!(
            "ratio web/native CPU per frame: median {r:.2} of the rounds' {}",
            report["ratios"]
        ),
        None => println!("ratio web/native CPU per frame: not measurable"),
    }
    println!("report: {}", args.report.display());
    Ok(())
}

/// What the recorder did in a gateway run: bursts written, frames it
/// dropped (target 0), bytes on disk and per hour of recorded talk.
fn recording_figures(dir: &Path, counters: &serde_json::Value) -> serde_json::Value {
    fn walk(dir: &Path, bytes: &mut u64, files: &mut u64) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, bytes, files);
            } else if path.extension().is_some_and(|e| e == "opus") {
                *bytes += entry.metadata().map_or(0, |m| m.len());
                *files += 1;
            }
        }
    }
    let (mut bytes, mut files) = (0, 0);
    walk(dir, &mut bytes, &mut files);
    // Talk relayed, so recorded: frames in less every refusal, 20 ms each
    // (terminal-sim's frames).
    let count = |k: &str| counters[k].as_u64().unwrap_or(0);
    let refused: u64 = [
        "voice_not_holder",
        "voice_malformed",
        "voice_unknown_group",
        "voice_rate_limited",
    ]
    .iter()
    .map(|k| count(k))
    .sum();
    let talk_hours = count("voice_in").saturating_sub(refused) as f64 * 0.020 / 3600.0;
    serde_json::json!({
        "files": files,
        "bytes": bytes,
        "bursts_written": counters["recordings_written"],
        "frames_dropped": counters["recorder_frames_dropped"],
        "frames_late": counters["recorder_frames_late"],
        "errors": counters["recorder_errors"],
        "bytes_per_talk_hour": (talk_hours > 0.0 && files > 0).then(|| bytes as f64 / talk_hours),
    })
}

/// CPU model and count, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} x {model}")
}
