//! The gateway process is killed with SIGKILL during an alert storm and
//! restarted on the same data directory: every alert confirmed to its
//! issuer still reaches its recipient, and no acknowledged receipt is lost.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::Duration;

use ptt_codec::{AlertBody, AlertKind, ClientMsg, ReceiptStatus, ServerMsg, Target, TerminalId};
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Terminal};
use ptt_tests::org::*;
use ptt_tests::{bin, free_udp_port, wait_for_log};

struct Gateway {
    child: Child,
    port: u16,
}

fn start(dir: &std::path::Path, run: u32) -> Gateway {
    let port = free_udp_port();
    let log = dir.join(format!("gateway-{run}.log"));
    let child = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(dir.join("org.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));
    Gateway { child, port }
}

async fn connect(dir: &std::path::Path, gw: &Gateway, key: &ProvisioningKey, id: u32) -> Terminal {
    let roots = terminal::load_ca(&dir.join("data/cert.pem")).unwrap();
    let endpoint = terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).unwrap();
    let addr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    Terminal::connect(
        &endpoint,
        addr,
        "localhost",
        TerminalId(id),
        &key.credential(TerminalId(id)),
    )
    .await
    .unwrap()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_alert_storm_loses_nothing_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let key = ProvisioningKey::generate();
    key.save(&dir.path().join("test.key")).unwrap();
    std::fs::write(
        dir.path().join("org.toml"),
        format!("[auth]\nkey_file = \"test.key\"\n{ORG}"),
    )
    .unwrap();

    let mut gw = start(dir.path(), 1);
    let mut console = connect(dir.path(), &gw, &key, CONSOLE_PS).await;
    // A receipt acknowledged before the crash.
    let mut guard = connect(dir.path(), &gw, &key, GUARD_A1).await;
    let (first, _) = console
        .send_alert(Target::Group(UNIT_A), body(0))
        .await
        .unwrap();
    assert_eq!(guard.next_alert().await.unwrap().alert, first);
    assert_eq!(
        guard
            .receipt(first, ReceiptStatus::Accepted, "")
            .await
            .unwrap(),
        ReceiptStatus::Accepted
    );

    // The storm: 300 alerts for a guard who is offline, sent without waiting;
    // the gateway is killed once 40 are confirmed.
    const STORM: u32 = 300;
    for n in 1..=STORM {
        console
            .send(ClientMsg::AlertSend {
                request: n,
                body: body(n),
                target: Target::Terminals(vec![TerminalId(GUARD_B1)]),
            })
            .unwrap();
    }
    let mut confirmed = BTreeSet::new();
    let mut killed = false;
    loop {
        match console.next_event_within(Duration::from_secs(3)).await {
            Ok(ServerMsg::AlertAccepted { alert, .. }) => {
                confirmed.insert(alert);
                if confirmed.len() == 40 && !killed {
                    Command::new("kill")
                        .args(["-KILL", &gw.child.id().to_string()])
                        .status()
                        .unwrap();
                    killed = true;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = gw.child.wait();
    assert!(
        killed && confirmed.len() >= 40,
        "confirmed {}",
        confirmed.len()
    );

    // Restart on the same data directory; the guard comes online.
    let mut gw = start(dir.path(), 2);
    let mut offline_guard = connect(dir.path(), &gw, &key, GUARD_B1).await;
    let mut delivered = BTreeSet::new();
    while let Ok(m) = offline_guard
        .next_event_within(Duration::from_secs(2))
        .await
    {
        if let ServerMsg::Alert { alert, .. } = m {
            assert!(delivered.insert(alert), "alert {alert} shown twice");
        }
    }
    let lost: Vec<_> = confirmed.difference(&delivered).collect();
    eprintln!(
        "SIGKILL storm: {} sent, {} confirmed before the kill, {} delivered after restart, {} lost",
        STORM,
        confirmed.len(),
        delivered.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "confirmed but never delivered: {lost:?}");

    // The acknowledged receipt survived.
    let mut console = connect(dir.path(), &gw, &key, CONSOLE_PS).await;
    let (_, counts) = console.alert_status(first).await.unwrap();
    assert_eq!(
        counts.by_status[usize::from(ReceiptStatus::Accepted.code())],
        1
    );
    gw.child.kill().unwrap();
    let _ = gw.child.wait();
}
