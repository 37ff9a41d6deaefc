//! The living city (`terminal-sim run --scenario living-city`, what
//! `scripts/demo.sh --keep-running` shows a newcomer) against the real
//! gateway binary, watched from a police station's console as an operator
//! would: members' positions arrive, reports and clues come up, an SOS comes
//! and is cancelled by its raiser, a dispatch is read, answered and arrived
//! at; SIGINT ends the run cleanly with a report of the voice it carried.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use ptt_codec::{AlertBody, AlertKind, ReceiptStatus, ServerMsg, Target, TerminalId};
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_gateway::org::{NodeKind, Org};
use ptt_terminal_sim::terminal::{self, Terminal};
use ptt_tests::{bin, free_udp_port, wait_for_log};

/// The living city sped up so a few seconds show everything: positions
/// every ~1 s, bursts of 0.5-2 s, a report a second, an SOS every 2 s
/// cancelled by its raiser after 1.5 s, answers within a second or two.
const FAST_CITY: &str = r#"
name = "living-city-fast"
description = "the living city, sped up for a test"
pattern = "living-city"
burst_ms = 2000
gap_ms = 500
talkers = 3
position_ms = 1000
position_spread = 0.5
patrol = true
walk_radius_m = 250.0
speed_mps = 1.5
accept_ratio = 0.5
read_ms = 300
respond_ms = 500
arrive_ms = 1000
report_every_ms = 1000
sos_every_ms = 2000
sos_cancel_ms = 1500
ttl_s = 600
"#;

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_living_city_shows_on_a_station_console_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let org_path = dir.path().join("city.toml");
    assert!(Command::new(bin("terminal-sim"))
        .args(["gen-city", "--units", "30", "--out"])
        .arg(&org_path)
        .status()
        .unwrap()
        .success());
    let port = free_udp_port();
    let log = dir.path().join("gateway.log");
    let data = dir.path().join("data");
    let mut gateway = Command::new(bin("ptt-gateway"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--org"])
        .arg(&org_path)
        .arg("--data-dir")
        .arg(&data)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(&log, "gateway listening", Duration::from_secs(20));

    // The police station's command-room console that gen-city writes, as
    // the demo operator is bound to.
    let org = Org::load(&org_path).unwrap();
    let key = ProvisioningKey::load(org.key_file().unwrap()).unwrap();
    let console_entry = org
        .terminals()
        .find(|t| {
            t.is_console()
                && org
                    .node(ptt_codec::GroupId(t.node))
                    .is_some_and(|n| n.kind == NodeKind::PoliceStation)
        })
        .expect("gen-city puts a console at each police station");
    let (console_id, station) = (console_entry.id, console_entry.node);
    let roots = terminal::load_ca(&data.join("cert.pem")).unwrap();
    let endpoint = terminal::endpoint("127.0.0.1:0".parse().unwrap(), &roots).unwrap();
    let gateway_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut console = Terminal::connect(
        &endpoint,
        gateway_addr,
        "localhost",
        console_id,
        &key.credential(console_id),
    )
    .await
    .unwrap();
    console.watch_positions(station).unwrap();

    let scenario = dir.path().join("fast-city.toml");
    std::fs::write(&scenario, FAST_CITY).unwrap();
    let report = dir.path().join("report.json");
    // A file, not a pipe: nobody reads while the city runs.
    let sim_log = dir.path().join("terminal-sim.log");
    let mut sim = Command::new(bin("terminal-sim"))
        .args(["run", "--gateway", &format!("127.0.0.1:{port}"), "--ca"])
        .arg(data.join("cert.pem"))
        .arg("--org")
        .arg(&org_path)
        .arg("--scenario")
        .arg(&scenario)
        .args(["--duration", "0", "--groups", "30", "--report"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sim_log).unwrap())
        .spawn()
        .unwrap();

    // Watch the city for a while, dispatching the station's subtree once
    // its members are online.
    let mut positions: HashSet<TerminalId> = HashSet::new();
    let mut upward: Vec<AlertKind> = Vec::new();
    let mut sos_alerts: HashSet<u64> = HashSet::new();
    let mut cancelled: Vec<(u64, TerminalId)> = Vec::new();
    let mut receipts: Vec<(TerminalId, ReceiptStatus, String)> = Vec::new();
    let mut dispatch = None;
    let watch = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < watch {
        if dispatch.is_none() && positions.len() >= 20 {
            let body = AlertBody {
                kind: AlertKind::Dispatch,
                priority: 2,
                ttl_s: 600,
                title: "打架斗殴".into(),
                text: "夜市东口有人打架，请就近处置".into(),
                location: None,
                attachments: Vec::new(),
            };
            let target = Target::Subtree {
                node: station,
                roles: 0,
            };
            dispatch = Some(console.send_alert(target, body).await.unwrap().0);
        }
        let Ok(ev) = console.next_event_within(Duration::from_millis(500)).await else {
            continue;
        };
        match ev {
            ServerMsg::PositionUpdate {
                terminal,
                lat_e7,
                lon_e7,
                ..
            } => {
                // Around Jinhua: 29.08 N 119.65 E, within about 15 km.
                assert!((288_000_000..293_000_000).contains(&lat_e7), "{lat_e7}");
                assert!((1_193_000_000..1_200_000_000).contains(&lon_e7), "{lon_e7}");
                positions.insert(terminal);
            }
            ServerMsg::Alert { body, alert, .. } => match body.kind {
                AlertKind::Sos => {
                    sos_alerts.insert(alert);
                }
                kind => upward.push(kind),
            },
            ServerMsg::AlertCancelled { alert, by } => cancelled.push((alert, by)),
            ServerMsg::ReceiptUpdate {
                alert,
                terminal,
                status,
                reason,
                ..
            } if Some(alert) == dispatch => receipts.push((terminal, status, reason)),
            _ => {}
        }
    }

    signal(sim.id(), "-INT");
    let status = tokio::task::spawn_blocking(move || sim.wait())
        .await
        .unwrap()
        .unwrap();
    let stderr = std::fs::read_to_string(&sim_log).unwrap();
    assert!(status.success(), "terminal-sim failed: {stderr}");
    assert!(stderr.contains("the city goes quiet"), "{stderr}");

    assert!(positions.len() >= 20, "{} members placed", positions.len());
    assert!(
        upward
            .iter()
            .all(|k| matches!(k, AlertKind::Report | AlertKind::Clue)),
        "{upward:?}"
    );
    assert!(upward.len() >= 3, "{} reports and clues", upward.len());
    assert!(!sos_alerts.is_empty(), "no SOS");
    assert!(
        cancelled
            .iter()
            .any(|(a, by)| sos_alerts.contains(a) && *by != console_id),
        "no SOS cancelled by its raiser: {cancelled:?}"
    );
    let has = |s: ReceiptStatus| receipts.iter().any(|(_, st, _)| *st == s);
    assert!(dispatch.is_some(), "members never came online");
    assert!(has(ReceiptStatus::Read), "{receipts:?}");
    assert!(has(ReceiptStatus::Accepted), "{receipts:?}");
    assert!(has(ReceiptStatus::Arrived), "{receipts:?}");
    assert!(
        receipts
            .iter()
            .filter(|(_, s, _)| *s == ReceiptStatus::Rejected)
            .all(|(_, _, reason)| !reason.is_empty()),
        "a rejection without a reason: {receipts:?}"
    );

    // The bursts went through the gateway to the other members.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["scenario"], "living-city-fast");
    assert!(r["floor"]["granted"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["voice"]["frames_received"].as_u64().unwrap() > 0, "{r}");
    for key in [
        "frames_to_non_members",
        "overlapping_talkers",
        "wrong_speaker",
    ] {
        assert_eq!(r["voice"][key].as_u64(), Some(0), "{key} in {r}");
    }
    assert!(r["alerts"]["created"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(r["connections"]["failed"].as_u64(), Some(0), "{r}");

    console.close();
    signal(gateway.id(), "-TERM");
    assert!(gateway.wait().unwrap().success());
}
