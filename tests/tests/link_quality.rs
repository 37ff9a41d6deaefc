//! Link quality (issue 15 item 4) against the real gateway process:
//! terminals report how well they hear, the admin API shows each one's last
//! report (`/api/v1/terminals`) and lists them worst first
//! (`/api/v1/link`), and a flood of reports is dropped and counted.
//!
//! One listener's reports come from the reference library itself: it hears
//! a burst with two frames missing and reports them lost.

use std::time::{Duration, Instant};

use ptt_codec::control::kind;
use ptt_codec::{Class, ClientMsg, ErrorCode, GroupId, ServerMsg};
use ptt_tests::eventually::eventually;
use ptt_tests::hostile::{batch, raw_batch, GatewayProcess, RawSession, Reading};
use serde_json::Value;

const UNIT: GroupId = GroupId(5);
/// Talks a burst with frames 10 and 11 left out.
const TALKER: u32 = 501;
/// Hears it: its library reports 2 of 50 lost (4 %).
const LISTENER: u32 = 502;
/// Reports by hand: 20 % lost.
const BAD: u32 = 503;
/// Reports by hand: nothing lost; then floods.
const GOOD: u32 = 504;
/// Sends a report that cannot be (more late than received).
const LIAR: u32 = 601;
const FRAMES: u16 = 50;
const SKIPPED: [u16; 2] = [10, 11];

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    l.local_addr().expect("its address").port()
}

/// GETs `path` with the operator's token, as JSON.
fn get(port: u16, token: &str, path: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn metrics(port: u16, token: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("a body")
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} in {status}"))
}

fn ids(list: &Value) -> Vec<u64> {
    list["terminals"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["id"].as_u64().expect("an id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_kept_listed_worst_first_and_a_flood_is_dropped() {
    let port = free_tcp_port();
    let gw = GatewayProcess::start(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    eventually("the operations surface to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ())
    })
    .await;
    let file = std::fs::read_to_string(gw.data.join("operator.token")).expect("the token file");
    let token = file
        .lines()
        .find_map(|l| l.strip_prefix("admin "))
        .expect("an admin token")
        .to_owned();

    let mut talker = gw.terminal(TALKER).await;
    let mut listener = gw.terminal(LISTENER).await;
    let bad = gw.terminal(BAD).await;
    let mut good = gw.terminal(GOOD).await;
    // Only the reports this test makes; the listener's once it heard the
    // whole burst (a report due mid-burst would split it in two).
    for t in [&talker, &listener, &bad, &good] {
        t.link().set_report_every(None);
    }
    talker.join(UNIT).await.expect("talker joins");
    listener.join(UNIT).await.expect("listener joins");

    // A burst with two frames missing, heard through the library.
    let hearing = tokio::spawn(async move {
        let mut heard = 0;
        while heard < FRAMES - SKIPPED.len() as u16 {
            match tokio::time::timeout(Duration::from_secs(10), listener.recv_voice()).await {
                Ok(Ok(_)) => heard += 1,
                _ => break,
            }
        }
        (listener, heard)
    });
    let burst = talker.talk(UNIT, Class::Normal).await.expect("floor");
    for seq in (0..FRAMES).filter(|s| !SKIPPED.contains(s)) {
        talker
            .send_voice(UNIT, burst, seq, &[0xfc, 0xff, 0xfe], seq + 1 == FRAMES)
            .expect("voice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (listener, heard) = hearing.await.expect("the listener's task");
    assert_eq!(heard, FRAMES - 2);
    talker.release(UNIT).expect("release");
    // Report now: the next report is due one (short) interval on.
    listener
        .link()
        .set_report_every(Some(Duration::from_millis(100)));

    // Two reports made by hand.
    bad.send(ClientMsg::LinkReport {
        received: 200,
        lost: 50,
        late: 10,
        jitter_us: 30_000,
    })
    .expect("bad's report");
    good.send(ClientMsg::LinkReport {
        received: 250,
        lost: 0,
        late: 0,
        jitter_us: 800,
    })
    .expect("good's report");

    let worst_first = eventually("three reports kept", || {
        let list = get(port, &token, "/api/v1/link");
        if ids(&list).len() == 3 {
            Ok(list)
        } else {
            Err(list)
        }
    })
    .await;
    assert_eq!(
        ids(&worst_first),
        [u64::from(BAD), u64::from(LISTENER), u64::from(GOOD)],
        "{worst_first}"
    );
    let heard_badly = &worst_first["terminals"][0];
    assert_eq!(heard_badly["online"], true);
    assert_eq!(heard_badly["link"]["lost"], 50);
    assert_eq!(heard_badly["link"]["late"], 10);
    assert_eq!(heard_badly["link"]["jitter_us"], 30_000);
    assert_eq!(heard_badly["link"]["loss_ratio"], 0.2);
    // The library's own report: 48 received, the 2 left out lost.
    let library = &worst_first["terminals"][1]["link"];
    assert_eq!(library["received"], FRAMES - 2, "{library}");
    assert_eq!(library["lost"], 2, "{library}");
    assert_eq!(library["totals"]["reports"], 1);
    assert!(
        worst_first["terminals"][1]["name"].is_string(),
        "{worst_first}"
    );
    // ?limit= cuts the list, worst kept.
    assert_eq!(
        ids(&get(port, &token, "/api/v1/link?limit=1")),
        [u64::from(BAD)]
    );

    // The terminals view: a `link` object where a report came, null where
    // none did (the talker heard nothing).
    let terminals = get(port, &token, "/api/v1/terminals");
    let of = |id: u32| {
        terminals["terminals"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {terminals}"))["link"]
            .clone()
    };
    assert_eq!(of(TALKER), Value::Null);
    // Which voice form each receives: the library's terminals offer SRTP,
    // and the listener, which heard a burst, proved its path.
    let media = |id: u32| {
        terminals["terminals"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|t| t["id"] == id)
            .expect("listed")["media"]
            .clone()
    };
    assert_eq!(media(LISTENER)["form"], "srtp", "{terminals}");
    assert!(media(LISTENER)["ssrc"].as_u64().is_some_and(|s| s > 0));
    assert_eq!(of(GOOD)["received"], 250);
    assert_eq!(of(BAD)["totals"]["lost"], 50);

    // A flood of reports: the first kept (a second after the last one),
    // the rest within the second dropped, the session unharmed.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = get(port, &token, "/api/v1/status");
    let (kept0, dropped0) = (
        counter(&before, "link_reports"),
        counter(&before, "link_reports_dropped"),
    );
    const FLOOD: u64 = 200;
    let flood = ClientMsg::LinkReport {
        received: 1,
        lost: 1,
        late: 0,
        jitter_us: 0,
    };
    let started = Instant::now();
    for _ in 0..FLOOD {
        good.send(flood.clone()).expect("flooding");
    }
    let status = eventually("every flooded report handled", || {
        let s = get(port, &token, "/api/v1/status");
        let handled =
            counter(&s, "link_reports") - kept0 + counter(&s, "link_reports_dropped") - dropped0;
        if handled == FLOOD {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await;
    let took = started.elapsed();
    let kept = counter(&status, "link_reports") - kept0;
    let dropped = counter(&status, "link_reports_dropped") - dropped0;
    // One kept per second of the flood at most (it takes milliseconds).
    assert!(kept >= 1, "the first report of the flood is kept");
    assert!(
        kept <= 1 + took.as_secs(),
        "{kept} kept of a flood that took {took:?}"
    );
    assert_eq!(kept + dropped, FLOOD);
    let entry = get(port, &token, "/api/v1/link")["terminals"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["id"] == GOOD)
        .expect("good's entry")["link"]
        .clone();
    assert_eq!(entry["totals"]["reports"], 1 + kept, "{entry}");
    assert_eq!(entry["received"], 1);
    // The session answers as before.
    good.send(ClientMsg::Ping { nonce: 7 }).expect("ping");
    good.wait_for(|m| matches!(m, ServerMsg::Pong { nonce: 7 }).then_some(Ok(())))
        .await
        .expect("pong after the flood");
    // Prometheus has both counters.
    let text = metrics(port, &token);
    for line in [
        format!(
            "ptt_link_reports_total {}",
            counter(&status, "link_reports")
        ),
        format!(
            "ptt_link_reports_dropped_total {}",
            counter(&status, "link_reports_dropped")
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }

    // A report that cannot be is malformed: answered MALFORMED for frame
    // 0x13, nothing kept.
    let mut liar = RawSession::connect(&gw, LIAR, Reading::ControlOnly).await;
    let mut body = Vec::new();
    for v in [5u32, 0, 6, 0] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    assert!(liar.write(raw_batch(kind::LINK_REPORT, &body, 1)).await);
    // A short body too.
    assert!(
        liar.write(raw_batch(kind::LINK_REPORT, &body[..15], 1))
            .await
    );
    // And a good one after them, kept.
    assert!(
        liar.write(batch(
            &ClientMsg::LinkReport {
                received: 3,
                lost: 0,
                late: 3,
                jitter_us: 0
            },
            1
        ))
        .await
    );
    eventually("two MALFORMED answers", || {
        liar.replies().errors(ErrorCode::Malformed) == 2
    })
    .await;
    let liars = eventually("the good report kept", || {
        let list = get(port, &token, "/api/v1/link");
        match list["terminals"]
            .as_array()
            .and_then(|l| l.iter().find(|t| t["id"] == LIAR).cloned())
        {
            Some(t) => Ok(t),
            None => Err(list),
        }
    })
    .await;
    assert_eq!(liars["link"]["received"], 3);
    assert_eq!(liars["link"]["totals"]["reports"], 1);

    drop(listener);
    drop(bad);
    drop(talker);
}
