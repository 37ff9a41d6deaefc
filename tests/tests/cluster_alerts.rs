//! Alerts across a gateway cluster (docs/notes/h-alerts.md), end to end:
//! three NATS servers with JetStream, three `ptt-gateway` nodes as real
//! processes. An issuer on node a sends an alert storm to a unit whose
//! guard is on node b; a gateway node or a NATS server is SIGKILLed in the
//! middle. Every alert confirmed to the issuer reaches the guard (on
//! whichever node it reconnects to) and is shown once, and every delivery
//! receipt reaches the issuer once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ptt_codec::{AlertBody, AlertKind, ReceiptStatus, ServerMsg, Target, TerminalId};
use ptt_terminal_sim::terminal::{self, Error, SeenAlerts, Terminal};
use ptt_tests::cluster::GatewayCluster;
use ptt_tests::nats::NatsCluster;
use ptt_tests::org::*;
use ptt_tests::{bin, free_udp_port, wait_for_log};

/// Alerts in a storm.
const STORM: u32 = 100;

/// Alert ids from this one up are the cluster's (`store::CLUSTER_IDS`).
const CLUSTER_IDS: u64 = 1 << 40;

fn body(n: u32) -> AlertBody {
    AlertBody {
        kind: AlertKind::Warning,
        priority: 2,
        ttl_s: 3600,
        title: format!("预警 {n}"),
        text: "夜市附近发现可疑人员".into(),
        location: None,
        attachments: Vec::new(),
    }
}

/// Connects terminal `id` to node `i`, remembering the alerts `seen`
/// already shown (as a terminal keeps them across reconnects).
async fn connect(cluster: &GatewayCluster, i: usize, id: u32, seen: SeenAlerts) -> Terminal {
    let roots = terminal::load_ca(&cluster.cert()).expect("the cluster's certificate");
    let endpoint =
        terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).expect("a client endpoint");
    let addr = format!("127.0.0.1:{}", cluster.nodes[i].port)
        .parse()
        .unwrap();
    Terminal::connect_with_seen(
        &endpoint,
        addr,
        "localhost",
        TerminalId(id),
        &cluster.key.credential(TerminalId(id)),
        seen,
    )
    .await
    .unwrap_or_else(|e| panic!("terminal {id} connecting to node {i}: {e}"))
}

/// Shows `t`'s alerts as they come (their ids into `shown`, in order),
/// until its connection ends or the task is aborted.
fn show(mut t: Terminal, shown: Arc<Mutex<Vec<u64>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match t.next_alert().await {
                Ok(a) => shown.lock().unwrap().push(a.alert),
                Err(Error::Timeout(_)) => {}
                Err(_) => return,
            }
        }
    })
}

/// What the storm did: alerts confirmed (in order), refused, and the
/// longest wait for a confirmation.
struct Storm {
    accepted: Vec<u64>,
    refused: Vec<String>,
    slowest: Duration,
    latencies: Vec<Duration>,
}

/// Sends [`STORM`] alerts to unit A from `console`, calling `midway` once
/// after half of them.
async fn storm(console: &mut Terminal, mut midway: impl FnMut()) -> Storm {
    let mut out = Storm {
        accepted: Vec::new(),
        refused: Vec::new(),
        slowest: Duration::ZERO,
        latencies: Vec::new(),
    };
    for n in 0..STORM {
        if n == STORM / 2 {
            midway();
        }
        let started = Instant::now();
        match console.send_alert(Target::Group(UNIT_A), body(n)).await {
            Ok((id, recipients)) => {
                assert!(recipients >= 1);
                out.accepted.push(id);
            }
            Err(e) => out.refused.push(e.to_string()),
        }
        let took = started.elapsed();
        out.slowest = out.slowest.max(took);
        out.latencies.push(took);
    }
    out
}

/// Waits (up to `within`) until every alert of `accepted` was shown.
async fn wait_shown(shown: &[&Arc<Mutex<Vec<u64>>>], accepted: &[u64], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let all: BTreeSet<u64> = shown
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .collect();
        if accepted.iter().all(|a| all.contains(a)) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The delivery receipts of `guard` the issuer is told about, per alert,
/// read (up to `within`) until there is one for each of `accepted`.
async fn delivered_updates(
    console: &mut Terminal,
    guard: u32,
    accepted: &[u64],
    within: Duration,
) -> BTreeMap<u64, u32> {
    let mut updates: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = Instant::now() + within;
    while accepted.iter().any(|a| !updates.contains_key(a)) && Instant::now() < deadline {
        match console.next_event_within(Duration::from_millis(500)).await {
            Ok(ServerMsg::ReceiptUpdate {
                alert,
                terminal,
                status: ReceiptStatus::Delivered,
                ..
            }) if terminal == TerminalId(guard) => *updates.entry(alert).or_default() += 1,
            Ok(_) | Err(Error::Timeout(_)) => {}
            Err(e) => panic!("the issuer's connection failed: {e}"),
        }
    }
    // Anything still queued: a second update for the same step would be a
    // duplicate.
    while let Ok(m) = console.next_event_within(Duration::from_millis(500)).await {
        if let ServerMsg::ReceiptUpdate {
            alert,
            terminal,
            status: ReceiptStatus::Delivered,
            ..
        } = m
        {
            if terminal == TerminalId(guard) {
                *updates.entry(alert).or_default() += 1;
            }
        }
    }
    updates
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_recipients_node_mid_storm_loses_and_repeats_no_confirmed_alert() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut console = cluster.terminal(0, CONSOLE_PS).await;
    let seen = SeenAlerts::default();
    let (on_b, on_c) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let reader_b = show(
        connect(&cluster, 1, GUARD_A1, seen.clone()).await,
        on_b.clone(),
    );

    let mut killed = None;
    let storm = storm(&mut console, || {
        cluster.kill(1);
        killed = Some(Instant::now());
    })
    .await;
    reader_b.abort();
    // The guard fails over to node c, with the alerts it has shown.
    let reader_c = show(
        connect(&cluster, 2, GUARD_A1, seen.clone()).await,
        on_c.clone(),
    );
    wait_shown(&[&on_b, &on_c], &storm.accepted, Duration::from_secs(30)).await;
    let updates = delivered_updates(
        &mut console,
        GUARD_A1,
        &storm.accepted,
        Duration::from_secs(30),
    )
    .await;
    reader_c.abort();

    let (b, c) = (on_b.lock().unwrap().clone(), on_c.lock().unwrap().clone());
    let accepted: BTreeSet<u64> = storm.accepted.iter().copied().collect();
    assert_eq!(accepted.len(), storm.accepted.len(), "alert ids are unique");
    assert!(
        accepted.iter().all(|a| *a > CLUSTER_IDS),
        "cluster alerts have cluster ids"
    );
    assert!(
        storm.refused.is_empty(),
        "the cluster refused alerts though NATS was up: {:?}",
        storm.refused
    );
    let shown: Vec<u64> = b.iter().chain(&c).copied().collect();
    let distinct: BTreeSet<u64> = shown.iter().copied().collect();
    let lost: Vec<u64> = accepted.difference(&distinct).copied().collect();
    assert!(lost.is_empty(), "confirmed alerts never shown: {lost:?}");
    assert_eq!(shown.len(), distinct.len(), "an alert was shown twice");
    assert!(
        !b.is_empty() && !c.is_empty(),
        "shown on b {} and on c {}",
        b.len(),
        c.len()
    );
    let missing: Vec<u64> = accepted
        .iter()
        .filter(|a| !updates.contains_key(a))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "delivery receipts never reached the issuer: {missing:?}"
    );
    let twice: Vec<u64> = updates
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(a, _)| *a)
        .collect();
    assert!(
        twice.is_empty(),
        "the issuer was told of a delivery twice: {twice:?}"
    );

    // Node c's deliveries beyond what the guard showed there are
    // redeliveries the terminal's seen set absorbed.
    cluster.stop(2);
    let log = cluster.log(2);
    let delivered_c = counter(&log, "alerts_delivered");
    let half = STORM as usize / 2;
    let (mut before, mut after) = (
        storm.latencies[..half].to_vec(),
        storm.latencies[half..].to_vec(),
    );
    before.sort();
    after.sort();
    eprintln!(
        "FIGURES kill-gateway: accepted {} refused {} shown on b {} on c {} redelivered by c {} \
         slowest AlertSend->AlertAccepted {:?}; p50/p99 before the kill {:?}/{:?}, after {:?}/{:?}; \
         killed {:?} before the end",
        accepted.len(),
        storm.refused.len(),
        b.len(),
        c.len(),
        delivered_c.saturating_sub(c.len() as u64),
        storm.slowest,
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        percentile(&after, 0.5),
        percentile(&after, 0.99),
        killed.map(|k| k.elapsed()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_nats_server_mid_storm_loses_no_confirmed_alert() {
    let mut nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
    let mut console = cluster.terminal(0, CONSOLE_PS).await;
    let on_b = Arc::new(Mutex::new(Vec::new()));
    let reader_b = show(
        connect(&cluster, 1, GUARD_A1, SeenAlerts::default()).await,
        on_b.clone(),
    );

    // The server leading the alert stream: its death makes JetStream elect
    // another, and refuse writes meanwhile.
    let leader = stream_leader(&nats).await;
    let storm = storm(&mut console, || nats.kill(leader)).await;
    eprintln!(
        "killed NATS server n{} (the alert stream's leader)",
        leader + 1
    );
    wait_shown(&[&on_b], &storm.accepted, Duration::from_secs(30)).await;
    let updates = delivered_updates(
        &mut console,
        GUARD_A1,
        &storm.accepted,
        Duration::from_secs(30),
    )
    .await;
    reader_b.abort();

    let b = on_b.lock().unwrap().clone();
    let shown: BTreeSet<u64> = b.iter().copied().collect();
    let lost: Vec<u64> = storm
        .accepted
        .iter()
        .filter(|a| !shown.contains(a))
        .copied()
        .collect();
    assert!(lost.is_empty(), "confirmed alerts never shown: {lost:?}");
    assert_eq!(shown.len(), b.len(), "an alert was shown twice");
    // A refusal is allowed (the issuer was told); a confirmation without
    // the stream's acknowledgement is not: every confirmed one arrived.
    assert!(
        storm.accepted.len() + storm.refused.len() == STORM as usize,
        "every AlertSend was answered"
    );
    let missing: Vec<u64> = storm
        .accepted
        .iter()
        .filter(|a| !updates.contains_key(a))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "delivery receipts never reached the issuer: {missing:?}"
    );
    assert!(updates.values().all(|n| *n == 1), "a delivery told twice");
    let mut latencies = storm.latencies.clone();
    latencies.sort();
    eprintln!(
        "FIGURES kill-nats: accepted {} refused {} {:?} slowest AlertSend->AlertAccepted {:?} p50 {:?} p99 {:?}",
        storm.accepted.len(),
        storm.refused.len(),
        storm.refused,
        storm.slowest,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}

/// A single node (no `[cluster]`, no NATS) as a process, its QUIC port,
/// and a terminal connector.
struct Single {
    child: std::process::Child,
    port: u16,
    key: ptt_gateway::org::auth::ProvisioningKey,
}

impl Single {
    fn start(dir: &std::path::Path) -> Single {
        let key = ptt_gateway::org::auth::ProvisioningKey::generate();
        key.save(&dir.join("test.key")).unwrap();
        std::fs::write(
            dir.join("org.toml"),
            format!("[auth]\nkey_file = \"test.key\"\n{ORG}"),
        )
        .unwrap();
        let port = free_udp_port();
        let log = dir.join("single.log");
        let child = std::process::Command::new(bin("ptt-gateway"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--no-http",
                "--org",
            ])
            .arg(dir.join("org.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_log(&log, "gateway listening", Duration::from_secs(30));
        Single { child, port, key }
    }

    async fn terminal(&self, dir: &std::path::Path, id: u32) -> Terminal {
        let roots = terminal::load_ca(&dir.join("data/cert.pem")).unwrap();
        let endpoint = terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).unwrap();
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        Terminal::connect(
            &endpoint,
            addr,
            "localhost",
            TerminalId(id),
            &self.key.credential(TerminalId(id)),
        )
        .await
        .unwrap()
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same storm on one node and on a cluster (issuer on a, guard on b),
/// nothing killed: every alert confirmed and shown once on both, and the
/// price of the stream's acknowledgement in confirmation latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_confirmed_and_shown_once_on_one_node_and_across_nodes() {
    let mut figures = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let single = Single::start(dir.path());
        let mut console = single.terminal(dir.path(), CONSOLE_PS).await;
        let shown = Arc::new(Mutex::new(Vec::new()));
        let reader = show(single.terminal(dir.path(), GUARD_A1).await, shown.clone());
        let storm = storm(&mut console, || {}).await;
        wait_shown(&[&shown], &storm.accepted, Duration::from_secs(30)).await;
        reader.abort();
        let shown = shown.lock().unwrap().clone();
        assert_eq!(storm.accepted.len(), STORM as usize, "{:?}", storm.refused);
        assert!(
            storm.accepted.iter().all(|a| *a < CLUSTER_IDS),
            "one node numbers its own"
        );
        let distinct: BTreeSet<u64> = shown.iter().copied().collect();
        assert_eq!(distinct.len(), shown.len(), "an alert was shown twice");
        assert_eq!(
            distinct,
            storm.accepted.iter().copied().collect::<BTreeSet<u64>>(),
            "every confirmed alert shown"
        );
        figures.push(("single node", storm.latencies));
    }
    {
        let nats = NatsCluster::start(3);
        let dir = tempfile::tempdir().unwrap();
        let cluster = GatewayCluster::start(dir.path(), 3, ORG, &nats);
        let mut console = cluster.terminal(0, CONSOLE_PS).await;
        let shown = Arc::new(Mutex::new(Vec::new()));
        let reader = show(cluster.terminal(1, GUARD_A1).await, shown.clone());
        let storm = storm(&mut console, || {}).await;
        wait_shown(&[&shown], &storm.accepted, Duration::from_secs(30)).await;
        reader.abort();
        let shown = shown.lock().unwrap().clone();
        assert_eq!(storm.accepted.len(), STORM as usize, "{:?}", storm.refused);
        let distinct: BTreeSet<u64> = shown.iter().copied().collect();
        assert_eq!(distinct.len(), shown.len(), "an alert was shown twice");
        assert_eq!(
            distinct,
            storm.accepted.iter().copied().collect::<BTreeSet<u64>>(),
            "every confirmed alert shown on another node"
        );
        figures.push(("cluster a->b", storm.latencies));
    }
    // The first 50 fit the issuer's alert rate burst (`[limits.rates]`
    // alert: 10/s, bursts of 50); the rest are paced by it.
    for (name, latencies) in figures {
        let mut burst = latencies[..STORM as usize / 2].to_vec();
        burst.sort();
        eprintln!(
            "FIGURES {name}: AlertSend->AlertAccepted of the first {} (within the rate burst) \
             p50 {:?} p99 {:?} max {:?}",
            burst.len(),
            percentile(&burst, 0.5),
            percentile(&burst, 0.99),
            burst.last().unwrap(),
        );
    }
}

/// The index of the NATS server leading the alert stream (servers are
/// named `n1`, `n2`, ... in start order).
async fn stream_leader(nats: &NatsCluster) -> usize {
    // Before any kill: every server is up.
    let client = async_nats::connect(nats.url(0)).await.expect("NATS");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream("PTT_ALERTS")
        .await
        .expect("every node created the alert stream when it joined");
    let info = stream.info().await.expect("the alert stream's info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    leader
        .strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .map(|n| n - 1)
        .unwrap_or_else(|| panic!("unexpected server name {leader}"))
}

/// Counter `name` in the `gateway stopped` line of a node's log (0 if none).
fn counter(log: &str, name: &str) -> u64 {
    let Some(line) = log.lines().rev().find(|l| l.contains("gateway stopped")) else {
        return 0;
    };
    let key = format!("\"{name}\":");
    line.split(&key)
        .nth(1)
        .and_then(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
