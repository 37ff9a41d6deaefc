//! `console-listeners`: the gateway's CPU per delivered voice frame to
//! browser consoles (WebTransport sessions) next to native listeners, in
//! one run (issue 13).
//!
//! The org is the bench's own: one police station with `groups` units of
//! one talker each, and `listeners` console terminals at the station; every
//! console joins every unit's group (a console may join any group under
//! its node). The same voice fan-out runs twice against a fresh gateway,
//! recording off: once with the consoles connected natively (ALPN `ptt/1`,
//! provisioned credentials), once over WebTransport (ALPN `h3`, console
//! session tokens put in the gateway's store before it starts, the
//! certificate pinned by the hashes `GET /console/api/session` returns),
//! through the same client library (`ptt_terminal::web`). Talkers are
//! native in both runs and talk as in `voice-steady`: 5 s bursts 300 ms
//! apart, one 40-byte frame every 20 ms, the send time in its first bytes.
//!
//! Only the consoles receive frames (a unit's only member is its talker),
//! so every delivery counted is one to a listener of the kind measured.
//! Gateway CPU is read from /proc from the first frame to 500 ms after the
//! last, and divided by the frames the listeners received.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use ptt_codec::{Class, GroupId, TerminalId};
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal::{SeenAlerts, Terminal};
use ptt_terminal_sim::report::{sample_process, Latency};
use sha2::Digest;

use crate::{bin, free_port, ms, peak_rss_mb, wait_for, Gateway};

/// Which way the consoles connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC with ALPN `ptt/1` and the provisioned credential.
    Native,
    /// WebTransport over HTTP/3 with a console session token.
    Web,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::Web => "web",
        }
    }
}

/// The size of the run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Unit groups, one talker each.
    pub groups: usize,
    /// Console terminals listening to every group.
    pub listeners: usize,
    /// Measured talk, seconds.
    pub duration_s: u64,
    /// Threads of the harness's runtime.
    pub threads: usize,
    /// Native and web runs each.
    pub rounds: usize,
}

/// Key held, then the pause, as terminal-sim's `voice-steady`.
const BURST: Duration = Duration::from_secs(5);
const GAP: Duration = Duration::from_millis(300);
const FRAME: Duration = Duration::from_millis(20);
/// A 20 ms Opus frame at 16 kbit/s is about 40 bytes; the first 8 carry
/// the send time.
const PAYLOAD: usize = 40;

const STATION: u32 = 3;
/// Unit `i`'s node and group id.
fn unit(i: usize) -> u32 {
    100 + i as u32
}
fn talker(i: usize) -> TerminalId {
    TerminalId(1000 + i as u32)
}
fn console(i: usize) -> TerminalId {
    TerminalId(5000 + i as u32)
}
/// Console `i`'s session token (its SHA-256 goes into the store).
fn token(i: usize) -> [u8; 32] {
    sha2::Sha256::digest(format!("console-bench-{i}")).into()
}

/// Writes the bench's org (and its provisioning key) into `dir`.
fn write_org(dir: &Path, shape: Shape) -> anyhow::Result<(std::path::PathBuf, ProvisioningKey)> {
    let key = ProvisioningKey::generate();
    key.save(&dir.join("consoles.key"))?;
    let mut org = String::from(
        "[auth]\nkey_file = \"consoles.key\"\n\n\
         [[node]]\nid = 1\nkind = \"city\"\nname = \"City\"\n\n\
         [[node]]\nid = 2\nparent = 1\nkind = \"district\"\nname = \"District\"\n\n\
         [[node]]\nid = 3\nparent = 2\nkind = \"police_station\"\nname = \"Station\"\n\n\
         [[node]]\nid = 4\nparent = 3\nkind = \"station\"\nname = \"Post\"\n",
    );
    for i in 0..shape.groups {
        org += &format!(
            "\n[[node]]\nid = {}\nparent = 4\nkind = \"unit\"\nname = \"Unit {i}\"\n",
            unit(i)
        );
        org += &format!(
            "\n[[terminal]]\nid = {}\nname = \"Talker {i}\"\nrole = \"police\"\nkind = \"handheld\"\nnode = {}\n",
            talker(i).0,
            unit(i)
        );
    }
    for i in 0..shape.listeners {
        org += &format!(
            "\n[[terminal]]\nid = {}\nname = \"Console {i}\"\nrole = \"dispatcher\"\nkind = \"console\"\nnode = {STATION}\n",
            console(i).0
        );
    }
    let path = dir.join("consoles.toml");
    std::fs::write(&path, org)?;
    Ok((path, key))
}

/// Runs the workload `rounds` times natively and over WebTransport, the
/// order alternating (native first in odd rounds, web first in even ones)
/// so neither kind always meets the machine warmer; returns every run, the
/// run of median cost of each kind, and the median of the rounds' ratios.
pub fn run(workdir: &Path, shape: Shape) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(workdir)?;
    let (org, key) = write_org(workdir, shape)?;
    let mut rounds = Vec::new();
    let (mut natives, mut webs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..shape.rounds.max(1) {
        let order = if round % 2 == 0 {
            [Transport::Native, Transport::Web]
        } else {
            [Transport::Web, Transport::Native]
        };
        let mut runs = serde_json::Map::new();
        for transport in order {
            eprintln!(
                "round {}: gateway, {} listeners {}: {} groups, {} s",
                round + 1,
                shape.listeners,
                transport.name(),
                shape.groups,
                shape.duration_s
            );
            runs.insert(
                transport.name().into(),
                one(workdir, &org, &key, shape, transport)?,
            );
        }
        let cost = |t: &str| runs[t]["cpu_us_per_frame"].as_f64();
        let ratio = cost("web")
            .zip(cost("native"))
            .and_then(|(w, n)| (n > 0.0).then(|| w / n));
        ratios.extend(ratio);
        natives.push(runs["native"].clone());
        webs.push(runs["web"].clone());
        rounds.push(serde_json::json!({
            "native": runs["native"],
            "web": runs["web"],
            "ratio_web_native": ratio,
        }));
    }
    Ok(serde_json::json!({
        "rounds": rounds,
        "native": median_run(&natives),
        "web": median_run(&webs),
        "ratio_web_native": median(&mut ratios),
        "ratios": ratios,
    }))
}

/// The median of `values` (the lower middle one of an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// The run of median CPU per delivered frame among `runs`, with every
/// run's cost beside it.
fn median_run(runs: &[serde_json::Value]) -> serde_json::Value {
    let mut sorted: Vec<&serde_json::Value> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        let cost = |v: &serde_json::Value| v["cpu_us_per_frame"].as_f64().unwrap_or(f64::MAX);
        cost(a).total_cmp(&cost(b))
    });
    let mut median = sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .map_or(serde_json::Value::Null, |v| (*v).clone());
    if median.is_object() {
        median["cpu_us_per_frame_of_runs"] =
            runs.iter().map(|r| r["cpu_us_per_frame"].clone()).collect();
    }
    median
}

/// One gateway run with the consoles connected by `transport`.
fn one(
    workdir: &Path,
    org: &Path,
    key: &ProvisioningKey,
    shape: Shape,
    transport: Transport,
) -> anyhow::Result<serde_json::Value> {
    let data = workdir.join(format!("gateway-{}", transport.name()));
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    std::fs::create_dir_all(&data)?;
    // The consoles' sessions, in both runs alike (the native run ignores
    // them): what a sign-in would have stored.
    {
        let store = ptt_gateway::alert::Store::open(&data.join("gateway.db"))
            .context("opening the gateway's store")?;
        for i in 0..shape.listeners {
            store.put_console_session(&ptt_gateway::store::ConsoleSession {
                token_hash: sha2::Sha256::digest(token(i)).into(),
                operator: format!("bench{i}"),
                terminal: console(i),
                created_ms: 0,
                expires_ms: u64::MAX / 2,
            })?;
        }
    }
    let config = workdir.join("consoles-gateway.toml");
    std::fs::write(&config, "[recording]\nenabled = false\n")?;
    let port = free_port()?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = workdir.join(format!("gateway-{}.log", transport.name()));
    let child = Command::new(bin("ptt-gateway")?)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(org)
        .arg("--data-dir")
        .arg(&data)
        .args(["--http", &http.to_string(), "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,quinn=warn")
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting ptt-gateway")?;
    let mut gateway = Gateway(child);
    wait_for(&log, "gateway listening", &mut gateway.0)?;
    let pid = gateway.0.id();
    let hashes = match transport {
        Transport::Native => Vec::new(),
        Transport::Web => cert_hashes(http, &token(0))?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(shape.threads.max(1))
        .enable_all()
        .build()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cert = data.join("cert.pem");
    let measured = runtime.block_on(drive(addr, &cert, key, hashes, shape, transport, pid))?;
    drop(runtime);
    let rss = peak_rss_mb(pid);
    drop(gateway);
    let text = std::fs::read_to_string(&log)?;
    let counters = text
        .lines()
        .filter_map(|l| l.split_once("counters=").map(|(_, rest)| rest))
        .next_back()
        .and_then(|rest| serde_json::from_str::<serde_json::Value>(rest.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    let Measured {
        over_h3,
        cpu_seconds,
        sent,
        received,
        latency,
    } = measured;
    let expected = sent * shape.listeners as u64;
    Ok(serde_json::json!({
        "transport": transport.name(),
        "listeners": shape.listeners,
        // Checked on each listener's connection, not taken on trust.
        "listeners_over_webtransport": over_h3,
        "cpu_seconds": cpu_seconds,
        "frames_sent": sent,
        "frames_expected": expected,
        "frames_delivered": received,
        "cpu_us_per_frame": (received > 0).then(|| cpu_seconds * 1e6 / received as f64),
        "delivered_ratio": received as f64 / expected.max(1) as f64,
        "latency_ms": ms(&latency.percentiles()),
        "rss_mb": rss,
        "gateway": {
            "voice_delivered": counters["voice_delivered"],
            "voice_datagrams_sent": counters["voice_datagrams_sent"],
            "voice_send_failed": counters["voice_send_failed"],
        },
    }))
}

/// What the harness measured in one run.
struct Measured {
    /// Listeners whose connection negotiated ALPN `h3` (WebTransport).
    over_h3: usize,
    cpu_seconds: f64,
    sent: u64,
    received: u64,
    latency: Latency,
}

/// Connects everyone, talks for the run's duration, and counts.
async fn drive(
    addr: SocketAddr,
    cert: &Path,
    key: &ProvisioningKey,
    hashes: Vec<[u8; 32]>,
    shape: Shape,
    transport: Transport,
    pid: u32,
) -> anyhow::Result<Measured> {
    let roots = ptt_terminal::load_ca(cert)?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let native = ptt_terminal::endpoint(any, &roots)?;
    let web = match transport {
        Transport::Native => None,
        Transport::Web => Some(ptt_terminal::web::endpoint(any, hashes)?),
    };
    let groups: Vec<GroupId> = (0..shape.groups).map(|i| GroupId(unit(i))).collect();

    // Listeners first, each in every group.
    let mut listeners = Vec::new();
    let mut over_h3 = 0;
    for i in 0..shape.listeners {
        let id = console(i);
        let mut t = match &web {
            None => Terminal::connect(&native, addr, "localhost", id, &key.credential(id)).await?,
            Some(endpoint) => {
                Terminal::connect_web(endpoint, addr, id, &token(i), SeenAlerts::default()).await?
            }
        };
        for g in &groups {
            t.join(*g)
                .await
                .with_context(|| format!("{id:?} joining {g:?}"))?;
        }
        if alpn(&t).as_deref() == Some(&b"h3"[..]) {
            over_h3 += 1;
        }
        listeners.push(t);
    }
    let mut talkers = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let id = talker(i);
        let mut t = Terminal::connect(&native, addr, "localhost", id, &key.credential(id)).await?;
        t.join(*g).await?;
        talkers.push(t);
    }
    eprintln!(
        "  {} listeners ({}) and {} talkers connected",
        listeners.len(),
        transport.name(),
        talkers.len()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let stop = tokio::sync::watch::channel(false);
    let mut listening = Vec::new();
    for t in listeners {
        let received = received.clone();
        let mut stop = stop.1.clone();
        listening.push(tokio::spawn(async move {
            let mut latency = Latency::default();
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    voice = t.recv_voice() => {
                        let Ok(voice) = voice else { break };
                        let opus = voice.opus();
                        if let Some(stamp) = opus.get(..8) {
                            let at = u64::from_le_bytes(stamp.try_into().expect("8 bytes"));
                            let now = epoch.elapsed().as_micros() as u64;
                            latency.record(Duration::from_micros(now.saturating_sub(at)));
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            t.close();
            latency
        }));
    }

    let before = sample_process(pid).context("reading the gateway's CPU time")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(shape.duration_s);
    let sent = Arc::new(AtomicU64::new(0));
    let mut talking = Vec::new();
    for (i, mut t) in talkers.into_iter().enumerate() {
        let group = groups[i];
        let sent = sent.clone();
        talking.push(tokio::spawn(async move {
            // Spread the groups' frames over the 20 ms tick.
            tokio::time::sleep(FRAME * i as u32 / shape.groups as u32).await;
            while tokio::time::Instant::now() < deadline {
                let burst = t.talk(group, Class::Normal).await?;
                let frames = (BURST.as_millis() / FRAME.as_millis()) as u16;
                let mut tick = tokio::time::interval(FRAME);
                let mut payload = BytesMut::zeroed(PAYLOAD);
                for seq in 0..frames {
                    tick.tick().await;
                    let last = seq + 1 == frames || tokio::time::Instant::now() >= deadline;
                    let at = epoch.elapsed().as_micros() as u64;
                    payload[..8].copy_from_slice(&at.to_le_bytes());
                    t.send_voice(group, burst, seq, &payload, last)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if last {
                        break;
                    }
                }
                tokio::time::sleep(FRAME).await;
                t.release(group)?;
                tokio::time::sleep(GAP).await;
            }
            t.close();
            Ok::<(), ptt_terminal::Error>(())
        }));
    }
    for t in talking {
        t.await??;
    }
    // Frames still in flight arrive; then the books close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sample_process(pid).context("reading the gateway's CPU time")?;
    let received = received.load(Ordering::Relaxed);
    let _ = stop.0.send(true);
    let mut latency = Latency::default();
    for l in listening {
        latency.merge(&l.await?);
    }
    Ok(Measured {
        over_h3,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        sent: sent.load(Ordering::Relaxed),
        received,
        latency,
    })
}

/// The ALPN `t`'s connection negotiated.
fn alpn(t: &Terminal) -> Option<Vec<u8>> {
    t.connection()
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The console certificate's hashes, as the page gets them: `GET
/// /console/api/session` with the session's token.
fn cert_hashes(http: SocketAddr, token: &[u8; 32]) -> anyhow::Result<Vec<[u8; 32]>> {
    let bearer: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let mut stream = TcpStream::connect(http)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /console/api/session HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET /console/api/session: {}",
            head.lines().next().unwrap_or("")
        );
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let session: serde_json::Value = serde_json::from_str(&body)?;
    let hashes = session["webtransport"]["cert_hashes"]
        .as_array()
        .context("cert_hashes in the session")?
        .iter()
        .filter_map(|h| h.as_str())
        .map(|h| {
            let bytes: Vec<u8> = (0..h.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect();
            <[u8; 32]>::try_from(bytes).map_err(|_| anyhow::anyhow!("a hash of 32 bytes"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if hashes.is_empty() {
        bail!("the gateway has no self-signed console certificate to pin");
    }
    Ok(hashes)
}

/// An HTTP/1.1 chunked body, joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_org_loads_with_every_console_under_the_station() {
        let dir = std::env::temp_dir().join(format!("consoles-org-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let shape = Shape {
            groups: 3,
            listeners: 4,
            duration_s: 1,
            threads: 1,
            rounds: 1,
        };
        let (path, _) = write_org(&dir, shape).expect("written");
        let org = ptt_gateway::org::Org::load(&path).expect("a valid org");
        assert_eq!(org.terminals().count(), 7);
        for i in 0..4 {
            let t = org.terminal(console(i)).expect("a console");
            assert!(t.is_console());
            for g in 0..3 {
                assert!(org.is_ancestor_or_self(t.node, unit(g)));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn medians_take_the_middle_run() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0]), Some(1.0));
        assert_eq!(median(&mut []), None);
        let runs: Vec<serde_json::Value> = [7.0, 5.0, 6.0]
            .iter()
            .map(|c| serde_json::json!({ "cpu_us_per_frame": c }))
            .collect();
        let m = median_run(&runs);
        assert_eq!(m["cpu_us_per_frame"], 6.0);
        assert_eq!(
            m["cpu_us_per_frame_of_runs"],
            serde_json::json!([7.0, 5.0, 6.0])
        );
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
    }
}
