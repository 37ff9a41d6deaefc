//! Revoking one terminal's credential while the gateway runs (issue 11
//! item 8): the real `ptt-gateway serve` process, `ptt-gateway revoke` run
//! as an operator runs it, the terminal closed with REVOKED within a
//! bounded time and refused at reconnect, everyone else unharmed, and let
//! back in by `ptt-gateway unrevoke` with its waiting alerts.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ptt_codec::{Class, CloseCode, GroupId, ServerMsg, Target, TerminalId};
use ptt_terminal_sim::terminal::{Error, Terminal};
use ptt_tests::bin;
use ptt_tests::hostile::*;

/// The revoked terminal: a guard of unit 6 (not the legit voice unit).
const STOLEN: u32 = SECOND_ATTACKER;
/// Its unit mate, who hears it talk.
const MATE: u32 = ACCOMPLICE;

/// How long a revocation may take to cut a session off with the default
/// `auth.revocation_poll_ms` (2 s): the poll, plus generous slack for a
/// loaded machine.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(10);

/// Runs `ptt-gateway <args>` against `data` and returns its standard
/// output; panics with its error output if it fails.
fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("ptt-gateway"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("running ptt-gateway");
    assert!(
        out.status.success(),
        "ptt-gateway {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Talks in `group` (a frame every 20 ms, new bursts as needed) until the
/// connection ends; returns the error it ended with and when.
async fn talk_until_closed(mut t: Terminal, group: GroupId) -> (Error, Instant) {
    let burst = t.talk(group, Class::Normal).await.expect("floor granted");
    let mut seq = 0u16;
    loop {
        if let Some(reason) = t.connection().close_reason() {
            return (Error::from(reason), Instant::now());
        }
        let _ = t.send_voice(group, burst, seq, &[0xf8, 0xff, 0xfe], false);
        seq = seq.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn revoked<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(e @ Error::CredentialRevoked { .. }) => assert!(e.is_final()),
        other => panic!("{what}: expected CredentialRevoked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_terminal_is_closed_refused_and_let_back_in() {
    let mut gw = GatewayProcess::start("").await;
    let scene = Scene::start(&gw).await;
    let mut city = gw.terminal(CITY_CONSOLE).await;

    // The stolen handset talks to its unit mate.
    let mut mate = gw.terminal(MATE).await;
    mate.join(SECOND_UNIT).await.expect("mate joins");
    let mut stolen = gw.terminal(STOLEN).await;
    stolen.join(SECOND_UNIT).await.expect("stolen joins");
    let talking = tokio::spawn(talk_until_closed(stolen, SECOND_UNIT));
    let heard = tokio::time::timeout(Duration::from_secs(10), mate.recv_voice())
        .await
        .expect("the mate hears the stolen handset")
        .expect("voice");
    assert_eq!(heard.header.speaker, STOLEN);

    // The operator revokes it, as a process, beside the running gateway.
    let out = cli(
        &gw.data,
        &[
            "revoke",
            "--terminal",
            &STOLEN.to_string(),
            "--reason",
            "handset stolen",
            "--by",
            "test",
        ],
    );
    assert!(out.contains("revoked"), "{out}");
    let revoked_at = Instant::now();
    let (ended, at) = tokio::time::timeout(CUT_OFF_WITHIN, talking)
        .await
        .unwrap_or_else(|_| panic!("not cut off within {CUT_OFF_WITHIN:?}:\n{}", gw.log_text()))
        .expect("talk task");
    eprintln!(
        "cut off {:?} after the revoke command returned",
        at.saturating_duration_since(revoked_at)
    );
    revoked("the live session", Err::<(), _>(ended));
    // Its floor is free again: the mate may talk.
    mate.wait_for(|m| match m {
        ServerMsg::FloorIdle { group } if *group == SECOND_UNIT => Some(Ok(())),
        _ => None,
    })
    .await
    .expect("the floor of the revoked talker ends");
    let burst = mate.talk(SECOND_UNIT, Class::Normal).await;
    assert!(burst.is_ok(), "the mate talks after: {burst:?}");
    mate.release(SECOND_UNIT).expect("release");

    // It cannot come back, however often it tries.
    for _ in 0..3 {
        revoked("reconnecting", gw.try_terminal(STOLEN).await);
    }
    let listed = cli(&gw.data, &["revoked", "--format", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(listed[0]["terminal"], STOLEN, "{listed}");
    assert_eq!(listed[0]["reason"], "handset stolen", "{listed}");
    assert_eq!(listed[0]["revoked_by"], "test", "{listed}");

    // An alert for it waits in the store while it is revoked.
    let (alert, recipients) = city
        .send_alert(
            Target::Terminals(vec![TerminalId(STOLEN)]),
            dispatch("For the owner"),
        )
        .await
        .expect("stored");
    assert_eq!(recipients, 1);

    // Lifted: it gets back in, with its group and the alert.
    let out = cli(&gw.data, &["unrevoke", "--terminal", &STOLEN.to_string()]);
    assert!(out.contains("lifted"), "{out}");
    let deadline = Instant::now() + CUT_OFF_WITHIN;
    let mut back = loop {
        match gw.try_terminal(STOLEN).await {
            Ok(t) => break t,
            Err(Error::CredentialRevoked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("not let back in within {CUT_OFF_WITHIN:?}: {e}"),
        }
    };
    assert!(back.welcome().resumed, "its groups are remembered");
    let got = tokio::time::timeout(Duration::from_secs(10), back.next_alert())
        .await
        .expect("the waiting alert arrives")
        .expect("alert");
    assert_eq!(got.alert, alert);
    assert!(
        cli(&gw.data, &["revoked"]).lines().count() == 1,
        "header only"
    );

    let outcome = scene.finish().await;
    eprintln!("{outcome}");
    outcome.assert_unharmed();
    let counters = gw.stop().await;
    assert_eq!(counters["sessions_revoked"], 1, "{counters}");
    assert!(counters["hello_revoked"].as_u64() >= Some(3), "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reads_the_revocations_at_once() {
    // A poll far longer than the test: only SIGHUP can cut it off.
    let mut gw = GatewayProcess::start("[auth]\nrevocation_poll_ms = 600000\n").await;
    let stolen = gw.terminal(STOLEN).await;
    cli(&gw.data, &["revoke", "--terminal", &STOLEN.to_string()]);
    // Not before the signal (nothing polls within the test).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stolen.connection().close_reason().is_none());
    let sent = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success());
    let closed = tokio::time::timeout(CUT_OFF_WITHIN, stolen.connection().closed())
        .await
        .expect("closed after SIGHUP");
    revoked("after SIGHUP", Err::<(), _>(Error::from(closed)));
    revoked("reconnecting", gw.try_terminal(STOLEN).await);
    assert!(gw.running(), "SIGHUP does not stop the gateway");
    let counters = gw.stop().await;
    assert_eq!(counters["sessions_revoked"], 1, "{counters}");
}

/// The hostile variant: a revoked handset reconnecting as fast as it can,
/// from several sockets, harms nobody (each attempt costs a handshake and
/// a `Hello`, bounded by the handshake limits) and never gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_terminal_hammering_reconnects_harms_nobody() {
    let mut gw = GatewayProcess::start("").await;
    cli(&gw.data, &["revoke", "--terminal", &ATTACKER.to_string()]);
    let sent = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("running kill");
    assert!(sent.success());
    // Refused from now on (the signal's read may take a moment).
    let deadline = Instant::now() + CUT_OFF_WITHIN;
    let mut before = 0;
    loop {
        before += 1;
        match gw.try_terminal(ATTACKER).await {
            Err(Error::CredentialRevoked { .. }) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("not refused REVOKED after SIGHUP: {other:?}"),
        }
    }
    let scene = Scene::start(&gw).await;
    let until = Instant::now() + Duration::from_millis(2500);
    let mut hammers = Vec::new();
    for _ in 0..4 {
        let endpoint = gw.endpoint();
        let (addr, credential) = (gw.addr, gw.credential(ATTACKER));
        hammers.push(tokio::spawn(async move {
            let (mut refused, mut other) = (0u64, Vec::new());
            while Instant::now() < until {
                let attempt = Terminal::connect(
                    &endpoint,
                    addr,
                    "localhost",
                    TerminalId(ATTACKER),
                    &credential,
                );
                match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                    Ok(Err(Error::CredentialRevoked { .. })) => refused += 1,
                    Ok(Ok(_)) => other.push("got in".to_string()),
                    Ok(Err(e)) => other.push(e.to_string()),
                    Err(_) => other.push("attempt timed out".into()),
                }
            }
            (refused, other)
        }));
    }
    let mut refused = 0;
    for h in hammers {
        let (r, other) = h.await.expect("hammer task");
        refused += r;
        assert!(other.is_empty(), "attempts not refused REVOKED: {other:?}");
    }
    let outcome = scene.finish().await;
    eprintln!("{outcome}\nreconnects refused REVOKED: {refused}");
    outcome.assert_unharmed();
    assert!(refused >= 4, "the hammer hammered: {refused}");
    let counters = gw.stop().await;
    // Each refused attempt (the hammer's and the last one before it) was
    // refused at its Hello, or, when it raced the SIGHUP's read, closed
    // right after registering; sessions that got in before the read are
    // closed by it.
    let at_hello = counters["hello_revoked"].as_u64().expect("a counter");
    let sessions = counters["sessions_revoked"].as_u64().expect("a counter");
    assert!(at_hello <= refused + 1, "{counters}");
    assert!(at_hello + sessions > refused, "{counters}");
    eprintln!("attempts before the SIGHUP's read took effect: {before}");
    // The close code is REVOKED on the wire, pinned in the codec.
    assert_eq!(CloseCode::Revoked.code(), 9);
}
