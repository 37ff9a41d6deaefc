//! Failover between two gateway processes that share a certificate and a
//! session-ticket key file (no cluster: each serves the org on its own): a
//! terminal given both addresses loses its node to SIGKILL, reconnects to
//! the other, joins its group again, talks and listens there, and resumes
//! its TLS session with a ticket the dead node issued.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ptt_codec::{Class, ServerMsg, TerminalId};
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Failover, Gateways, Terminal};
use ptt_tests::org::*;
use ptt_tests::{bin, free_udp_port, wait_for_log};

/// One gateway process.
struct Node {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts node `name` on a data directory of its own, with the shared
/// ticket key file if `shared_tickets` (else random keys of its own), and
/// (but for the first, which generates them) the first node's certificate
/// and key.
fn start(dir: &Path, name: &str, shared_tickets: bool, cert: Option<(&Path, &Path)>) -> Node {
    let port = free_udp_port();
    let config = dir.join(format!("{name}.toml"));
    let tickets = dir.join("ticket.keys").display().to_string();
    std::fs::write(
        &config,
        if shared_tickets {
            format!("[transport]\nticket_key_file = {tickets:?}\n")
        } else {
            String::new()
        },
    )
    .unwrap();
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(bin("ptt-gateway"));
    cmd.args(["serve", "--no-http", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(dir.join("org.toml"))
        .arg("--data-dir")
        .arg(dir.join(format!("data-{name}")));
    if let Some((cert, key)) = cert {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let child = cmd
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));
    Node {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        log,
    }
}

/// Stops `node` with SIGTERM and returns its `gateway stopped` line (the
/// counters).
fn stop(mut node: Node) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    while node.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "no stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&node.log).unwrap();
    text.lines()
        .find(|l| l.contains("gateway stopped"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned()
}

/// The value of counter `name` in a `gateway stopped` line.
fn counter(line: &str, name: &str) -> u64 {
    let at = line
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("{name} not in {line}"));
    line[at + name.len() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Waits for the next voice frame on `t` from `speaker`.
async fn hears(t: &Terminal, speaker: u32) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let v = t.recv_voice().await.unwrap();
            if v.header.speaker == speaker {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing heard from {speaker}"));
}

/// Takes the floor of the unit and sends three frames.
async fn talk(t: &mut Terminal) {
    let burst = t.talk(UNIT_A, Class::Normal).await.unwrap();
    for seq in 0..3u16 {
        t.send_voice(UNIT_A, burst, seq, &[0xf8, 0xff, 0xfe], seq == 2)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.release(UNIT_A).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_fails_over_to_the_other_node_rejoins_and_resumes_tls() {
    let counters = fail_over(true).await;
    assert_eq!(
        counter(&counters, "tls_tickets_accepted"),
        1,
        "the guard resumed with the dead node's ticket (the colleague made a full handshake): {counters}"
    );
    assert_eq!(counter(&counters, "tls_tickets_refused"), 0, "{counters}");
}

/// The control: nodes with ticket keys of their own refuse each other's
/// tickets, and the failover costs a full handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_ticket_key_the_failover_is_a_full_handshake() {
    let counters = fail_over(false).await;
    assert_eq!(counter(&counters, "tls_tickets_accepted"), 0, "{counters}");
    assert_eq!(
        counter(&counters, "tls_tickets_refused"),
        1,
        "the dead node's ticket, offered and refused: {counters}"
    );
}

/// Two nodes (sharing their ticket key if `shared_tickets`), a guard given
/// both addresses, SIGKILL of its node; checks that it fails over, rejoins,
/// talks and listens on the survivor, and returns the survivor's
/// `gateway stopped` line.
async fn fail_over(shared_tickets: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let key = ProvisioningKey::generate();
    key.save(&dir.path().join("test.key")).unwrap();
    std::fs::write(
        dir.path().join("org.toml"),
        format!("[auth]\nkey_file = \"test.key\"\n{ORG}"),
    )
    .unwrap();
    let tickets = dir.path().join("ticket.keys");
    let made = Command::new(bin("ptt-gateway"))
        .args(["ticket-key", "new"])
        .arg(&tickets)
        .status()
        .unwrap();
    assert!(made.success());

    let a = start(dir.path(), "a", shared_tickets, None);
    let (cert, tls_key) = (
        dir.path().join("data-a/cert.pem"),
        dir.path().join("data-a/key.pem"),
    );
    let b = start(dir.path(), "b", shared_tickets, Some((&cert, &tls_key)));
    let mut nodes = vec![a, b];

    let roots = terminal::load_ca(&cert).unwrap();
    let endpoint = terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).unwrap();
    let cluster: Gateways = format!("{},{}", nodes[0].addr, nodes[1].addr)
        .parse()
        .unwrap();
    let id = TerminalId(GUARD_A1);
    // A dead node noticed within 2 s rather than the default 30 s.
    let mut failover = Failover::new(
        endpoint.clone(),
        &roots,
        &cluster,
        "localhost",
        id,
        &key.credential(id),
    )
    .unwrap()
    .with_idle_timeout(Duration::from_secs(2));
    let mut guard = failover.connect().await.unwrap();
    let home = failover.current().expect("connected");
    assert_eq!(home, failover.order()[0], "its home node first");
    guard.join(UNIT_A).await.unwrap();

    // A colleague on the other node, which survives.
    let other = nodes.iter().position(|n| n.addr != home).unwrap();
    let colleague_id = TerminalId(GUARD_A2);
    let mut colleague = Terminal::connect(
        &endpoint,
        nodes[other].addr,
        "localhost",
        colleague_id,
        &key.credential(colleague_id),
    )
    .await
    .unwrap();
    colleague.join(UNIT_A).await.unwrap();

    // SIGKILL the guard's node.
    let lost = nodes.remove(1 - other);
    let killed = Command::new("kill")
        .args(["-KILL", &lost.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = Instant::now();
    drop(lost);

    // The guard notices (idle timeout), reconnects to the other node,
    // rejoins its group.
    let error = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Err(e) = guard.next_event().await {
                return e;
            }
        }
    })
    .await
    .expect("the loss is noticed within the idle timeout");
    assert!(!error.is_final(), "{error}");
    let mut guard = tokio::time::timeout(Duration::from_secs(30), failover.reconnect())
        .await
        .expect("reconnected within 30 s")
        .unwrap();
    assert_eq!(failover.current(), Some(nodes[0].addr), "on the survivor");
    assert!(
        !guard.welcome().resumed,
        "a node that never saw it has nothing to restore"
    );
    guard.rejoin(&[UNIT_A]).await.unwrap();
    let back = killed_at.elapsed();
    eprintln!("SIGKILL to rejoined on the other node: {back:?} (idle timeout 2 s)");

    // It talks there and is heard; it hears the colleague.
    talk(&mut guard).await;
    hears(&colleague, GUARD_A1).await;
    // The colleague saw the guard's floor come and go; it talks back.
    colleague
        .wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(Ok(())))
        .await
        .unwrap();
    talk(&mut colleague).await;
    hears(&guard, GUARD_A2).await;

    guard.close();
    colleague.close();
    stop(nodes.remove(0))
}

/// `terminal-sim run --gateway A,B`: the fleet spreads over both nodes; when
/// one is killed, every terminal on it fails over to the other, resuming
/// its TLS session there, and the report's `failover` section says so.
#[test]
fn terminal_sim_spreads_over_two_nodes_and_fails_over_when_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let org = dir.path().join("city.toml");
    let made = Command::new(bin("terminal-sim"))
        .args(["gen-city", "--units", "10", "--out"])
        .arg(&org)
        .status()
        .unwrap();
    assert!(made.success());
    // start() serves the org of this name (its key_file, city.key, is
    // found next to it).
    std::fs::copy(&org, dir.path().join("org.toml")).unwrap();
    let made = Command::new(bin("ptt-gateway"))
        .args(["ticket-key", "new"])
        .arg(dir.path().join("ticket.keys"))
        .status()
        .unwrap();
    assert!(made.success());
    let a = start(dir.path(), "a", true, None);
    let (cert, tls_key) = (
        dir.path().join("data-a/cert.pem"),
        dir.path().join("data-a/key.pem"),
    );
    let b = start(dir.path(), "b", true, Some((&cert, &tls_key)));
    let (a_addr, b_addr) = (a.addr, b.addr);

    let report = dir.path().join("report.json");
    let mut sim = Command::new(bin("terminal-sim"));
    sim.args(["run", "--gateway", &format!("{a_addr},{b_addr}"), "--ca"])
        .arg(&cert)
        .arg("--org")
        .arg(dir.path().join("org.toml"))
        .args([
            "--scenario",
            "voice-steady",
            "--duration",
            "12",
            "--groups",
            "4",
        ])
        .args(["--idle-timeout-ms", "2000", "--report"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let sim = sim.spawn().unwrap();
    // Into the measured phase (the ramp of a few dozen terminals takes
    // well under a second), then node A dies.
    std::thread::sleep(Duration::from_secs(4));
    let killed = Command::new("kill")
        .args(["-KILL", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(a);
    let out = sim.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "terminal-sim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let fo = &r["failover"];
    assert_eq!(fo["nodes"][0], a_addr.to_string(), "{fo}");
    let homes: Vec<u64> = fo["home_terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(homes[0] > 0 && homes[1] > 0, "spread over both: {homes:?}");
    assert_eq!(
        fo["failovers"], homes[0],
        "every terminal of the killed node failed over: {fo}"
    );
    assert_eq!(fo["lost_to_rejoined_ms"]["samples"], homes[0], "{fo}");
    assert_eq!(r["connections"]["offline_at_end"], 0, "{r}");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    let counters = stop(b);
    assert_eq!(
        counter(&counters, "tls_tickets_accepted"),
        homes[0],
        "each failover resumed with a ticket node A issued: {counters}"
    );
    assert_eq!(counter(&counters, "tls_tickets_refused"), 0, "{counters}");
}
