//! The command-room console (issue 13) end to end: the real gateway
//! process serving the console page and its API, the page in a headless
//! Chromium driven over WebDriver (support/browser.rs) with a fake
//! microphone playing speech, and simulated terminals of the reference
//! library on the other side.
//!
//! Every test needs Chromium and chromedriver (scripts/setup.sh installs
//! them); `PTT_SKIP_BROWSER=1` skips them on purpose. Assertions read the
//! page's test hooks (`window.pttConsole`, CONSOLE.md) and the DOM by
//! `data-testid`; screenshots of the main views go to
//! `<target>/console-screenshots/` (and `docs/screenshots/` with
//! `PTT_UPDATE_SCREENSHOTS=1`).

use std::time::{Duration, Instant};

use ptt_codec::audio::{Decoder, Encoder, EncoderConfig, FRAME_SAMPLES};
use ptt_codec::voice::FLAG_END;
use ptt_codec::{AlertKind, Class, GroupId, ReceiptStatus, ServerMsg, TerminalId};
use ptt_terminal_sim::terminal::Terminal;
use ptt_tests::browser::{self, Browser, Options, Page, WAIT};
use ptt_tests::console::{
    monitor_and_select, ConsoleGateway, EAST_CONSOLE, EAST_OPERATOR, EAST_STATION, WEST_CONSOLE,
    WEST_OPERATOR, WEST_STATION,
};
use ptt_tests::org::{GUARD_A1, GUARD_A2, GUARD_B1, POLICE_A, STAFF_A3, UNIT_A};
use serde_json::Value;

/// The guard of the other police station's unit.
const OTHER_GUARD: u32 = 1101;

/// The harness itself: Chromium starts headless through chromedriver, a
/// page of ours on http://127.0.0.1 is a secure context with WebTransport
/// and WebCodecs' Opus encoder, and the fake microphone plays the speech
/// WAV: its level, measured in the page by an `AnalyserNode`, is close to
/// the file's (a missing or silent file would read 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_harness_hears_the_speech_wav_through_the_fake_microphone() {
    if browser::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let source = browser::speech_wav(&wav, 7, 4);
    // The loudest 2048-sample window of the file at 48 kHz is about the
    // loudest 683-sample window of the 16 kHz source (the WAV is
    // normalised to -3 dBFS from it).
    let peak = f64::from(source.iter().map(|s| s.unsigned_abs()).max().unwrap()) / 32768.0;
    let loudest = source
        .windows(683)
        .step_by(160)
        .map(browser::rms)
        .fold(0.0, f64::max)
        * 0.708
        / peak;
    let page = Page::serve(MIC_PAGE).await;
    let b = Browser::start(Options {
        name: "harness".into(),
        microphone: Some(wav),
    })
    .await;
    b.goto(&page.url).await;
    let platform = b
        .wait_until(
            "the page's checks",
            WAIT,
            "return window.mic && window.mic.state !== 'starting' && window.mic;",
        )
        .await;
    assert_eq!(platform["state"], "listening", "{platform:#}");
    assert_eq!(platform["secure"], true, "{platform:#}");
    assert_eq!(platform["webtransport"], true, "{platform:#}");
    assert_eq!(platform["opus"], true, "{platform:#}");
    assert_eq!(platform["rate"], 48000, "{platform:#}");
    // Two seconds of listening covers several syllables of the signal.
    let heard = b
        .wait_until(
            "two seconds of microphone input",
            WAIT,
            "return window.mic.polls >= 40 && window.mic;",
        )
        .await;
    let max = heard["maxRms"].as_f64().unwrap();
    eprintln!("fake microphone: loudest window RMS {max:.3} (file {loudest:.3})");
    assert!(
        max > 0.3 * loudest && max < 2.0 * loudest,
        "the microphone's level {max:.3} is not the file's {loudest:.3}: {heard:#}"
    );
    b.screenshot_artifact("harness-microphone").await;
}

/// A page of our own measuring the microphone and the platform.
const MIC_PAGE: &str = r#"<!doctype html>
<html><body><h1>microphone</h1><pre id="out"></pre><script>
window.mic = {state: "starting", maxRms: 0, polls: 0, rate: 0, secure: window.isSecureContext,
  webtransport: typeof WebTransport === "function", opus: false, error: null};
(async () => {
  try {
    if (typeof AudioEncoder === "function") {
      const s = await AudioEncoder.isConfigSupported({codec: "opus", sampleRate: 48000,
        numberOfChannels: 1, bitrate: 24000});
      mic.opus = !!s.supported;
    }
    const stream = await navigator.mediaDevices.getUserMedia({audio: {channelCount: 1,
      echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    const ctx = new AudioContext({sampleRate: 48000});
    await ctx.resume();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(an);
    mic.rate = ctx.sampleRate;
    const buf = new Float32Array(an.fftSize);
    mic.state = "listening";
    setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      mic.maxRms = Math.max(mic.maxRms, Math.sqrt(sum / buf.length));
      mic.polls++;
      document.getElementById("out").textContent = JSON.stringify(mic, null, 1);
    }, 50);
  } catch (e) {
    mic.state = "error";
    mic.error = String(e);
  }
})();
</script></body></html>"#;

/// `seconds` of the speech signal at 16 kHz, as a simulated terminal
/// sends it.
fn speech(seed: u64, seconds: usize) -> Vec<i16> {
    let mut s = ptt_terminal_sim::speech::Speech::new(seed);
    let mut pcm = vec![0i16; FRAME_SAMPLES * 50 * seconds];
    for f in pcm.chunks_mut(FRAME_SAMPLES) {
        s.next_frame(f);
    }
    pcm
}

/// Connects terminal `id` and reports a position around 万达广场 in
/// Jinhua (its own, from its id), so the console's map has something to
/// show.
async fn terminal_at(gw: &ConsoleGateway, id: u32) -> Terminal {
    let t = gw.terminal(id).await;
    let (a, b) = (
        i32::try_from(id % 7).unwrap(),
        i32::try_from(id % 5).unwrap(),
    );
    t.report_position(291_050_000 + a * 9_000, 1_196_520_000 - b * 12_000, 6)
        .expect("position");
    t
}

/// Connects terminal `id` (with a position) and joins `group`.
async fn terminal_in(gw: &ConsoleGateway, id: u32, group: GroupId) -> Terminal {
    let mut t = terminal_at(gw, id).await;
    t.join(group).await.expect("joining its unit");
    t
}

/// The next alert `t` receives, waiting up to [`WAIT`].
async fn alert_of(t: &mut Terminal) -> ptt_terminal_sim::terminal::ReceivedAlert {
    tokio::time::timeout(WAIT, async {
        loop {
            match t.next_alert().await {
                Ok(a) => return a,
                Err(ptt_terminal_sim::terminal::Error::Timeout(_)) => continue,
                Err(e) => panic!("terminal {}: {e}", t.id().0),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("terminal {} got no alert within {WAIT:?}", t.id().0))
}

/// a. Sign-in: a wrong password shows the error and stays signed out; the
/// right one shows the operator's station, and the tree shows who is
/// online, following a terminal that comes online afterwards. Signing
/// out ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_shows_the_station_and_who_is_online() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let _online = [
        terminal_in(&gw, GUARD_A1, UNIT_A).await,
        terminal_in(&gw, GUARD_A2, UNIT_A).await,
    ];
    let b = Browser::start(Options {
        name: "a-signin".into(),
        microphone: None,
    })
    .await;
    b.goto(&gw.console_url()).await;
    b.fill("signin-name", EAST_OPERATOR.0).await;
    b.fill("signin-password", "not the password").await;
    b.click("signin-submit").await;
    let shown = b
        .wait_until(
            "the sign-in error",
            WAIT,
            "return document.querySelector('[data-testid=\"signin-error\"]').textContent.trim();",
        )
        .await;
    eprintln!("wrong password: {shown}");
    assert_eq!(b.console().await["state"], "signed-out");
    b.screenshot("console-signin-error").await;

    b.fill("signin-password", EAST_OPERATOR.1).await;
    b.click("signin-submit").await;
    b.wait_until(
        "the console online",
        WAIT,
        "return window.pttConsole.state === 'online';",
    )
    .await;
    let station = b.text("station").await;
    assert!(station.contains("城东派出所"), "station shown: {station:?}");
    let operator = b.text("operator").await;
    assert!(
        operator.contains(EAST_OPERATOR.0),
        "operator shown: {operator:?}"
    );

    // Presence: the two guards online, their unit mate offline; the same
    // words for the same state whatever the language.
    let presence = |id: u32| {
        format!(
            "return document.querySelector('[data-testid=\"presence-{id}\"]')?.textContent ?? '';"
        )
    };
    b.wait_until("the tree's members", WAIT, &presence(STAFF_A3))
        .await;
    let online = b.js(&presence(GUARD_A1)).await;
    assert_eq!(b.js(&presence(GUARD_A2)).await, online);
    let offline = b.js(&presence(STAFF_A3)).await;
    assert_ne!(online, offline, "online and offline members look the same");
    // Only the operator's subtree: police station 9's guard is not there.
    assert!(!b.has_testid(&format!("member-{OTHER_GUARD}")).await);
    // The positions reached the tree (and the map).
    b.wait_until(
        "the guard's position",
        WAIT,
        &format!(
            "return (document.querySelector('[data-testid=\"position-age-{GUARD_A1}\"]')?.textContent ?? '—') !== '—';"
        ),
    )
    .await;
    b.screenshot("console-main").await;

    // A terminal coming online shows within a few polls of the tree.
    let _late = terminal_in(&gw, STAFF_A3, UNIT_A).await;
    b.wait_until(
        "the staff member shown online",
        WAIT,
        &format!(
            "return document.querySelector('[data-testid=\"presence-{STAFF_A3}\"]')?.textContent === {online};"
        ),
    )
    .await;

    // Signing out ends the session: the page is back at sign-in and the
    // token it held is refused.
    let token = b
        .js("return sessionStorage.getItem('pttConsole:token');")
        .await;
    let mut api = gw.api();
    api.token = Some(token.as_str().expect("the session's token").to_owned());
    assert_eq!(api.get("/console/api/session").status, 200);
    b.click("signout").await;
    b.wait_until(
        "signed out",
        WAIT,
        "return window.pttConsole.state === 'signed-out';",
    )
    .await;
    b.by_testid("signin-submit").await;
    assert_eq!(api.get("/console/api/session").status, 401);
}

/// b. The console talks: the talk key held with the speech WAV as its
/// microphone reaches a guard of the unit as Opus frames that decode to
/// sound (not silence), and the gateway recorded the burst with about
/// the time it was held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_the_console_talks_to_a_unit_and_the_burst_is_recorded() {
    if browser::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    browser::speech_wav(&wav, 11, 6);
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let listener = terminal_in(&gw, GUARD_A1, UNIT_A).await;
    let b = gw.signed_in(EAST_OPERATOR, Some(wav), "b-ptt").await;
    monitor_and_select(&b, UNIT_A.0).await;

    let hearing = tokio::spawn(async move {
        let mut decoder = Decoder::new().expect("an Opus decoder");
        let (mut frames, mut ends, mut pcm, mut speakers) = (0u32, 0u32, Vec::new(), Vec::new());
        loop {
            let wait = if frames == 0 {
                WAIT
            } else {
                Duration::from_secs(3)
            };
            match tokio::time::timeout(wait, listener.recv_voice()).await {
                Ok(Ok(v)) => {
                    frames += 1;
                    speakers.push(v.header.speaker);
                    pcm.extend(
                        decoder
                            .decode(v.opus())
                            .expect("the console's Opus decodes"),
                    );
                    if v.header.flags & FLAG_END != 0 {
                        ends += 1;
                        break;
                    }
                }
                _ => break,
            }
        }
        (listener, frames, ends, pcm, speakers)
    });
    b.key_down(' ').await;
    b.wait_until(
        "the floor granted to the console",
        WAIT,
        &format!(
            "return window.pttConsole.floor['{}']?.state === 'granted';",
            UNIT_A.0
        ),
    )
    .await;
    let granted = Instant::now();
    // A second into the burst, the microphone's meter shows the speech.
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.screenshot("console-talking").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.key_up(' ').await;
    let held = granted.elapsed();
    let (_listener, frames, ends, pcm, speakers) = hearing.await.expect("the listener's task");
    let level = browser::rms(&pcm);
    eprintln!("console burst: held {held:?}, {frames} frames heard, END {ends}, RMS {level:.3}");
    assert!(frames >= 75, "{frames} frames in {held:?} of talking");
    assert_eq!(ends, 1, "the burst's last frame is flagged END");
    assert!(speakers.iter().all(|&s| s == EAST_CONSOLE), "{speakers:?}");
    assert!(
        level > 0.02,
        "the console's voice decodes to silence: RMS {level:.4}"
    );
    let stats = b.console().await["stats"].clone();
    assert!(
        stats["framesSent"].as_u64().unwrap_or(0) >= u64::from(frames),
        "{stats}"
    );
    b.wait_until(
        "the floor idle again",
        WAIT,
        &format!(
            "return window.pttConsole.floor['{}']?.state === 'idle';",
            UNIT_A.0
        ),
    )
    .await;

    // The gateway's recording of the burst: as many frames as relayed.
    let deadline = Instant::now() + WAIT;
    let row = loop {
        let listed = gw.cli(&["recordings", "--format", "json", "--group", "5"]);
        let row = listed
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .find(|r| r["speaker"] == EAST_CONSOLE && r["path"].is_string());
        if let Some(row) = row {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "no recording of the console's burst:\n{listed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let recorded = row["frames"].as_u64().unwrap() + row["filled"].as_u64().unwrap();
    let secs = recorded as f64 * 0.020;
    eprintln!("recording: {row}");
    assert!(
        recorded.abs_diff(u64::from(frames)) <= 5,
        "recorded {recorded} frames, the guard heard {frames}"
    );
    assert!(
        secs > 0.5 * held.as_secs_f64() && secs < held.as_secs_f64() + 1.5,
        "recorded {secs:.2} s of a {held:?} burst"
    );
    let path = gw
        .data
        .join("recordings")
        .join(row["path"].as_str().unwrap());
    assert!(path.is_file(), "{}", path.display());

    // The history tab lists it, with its recording to play.
    b.click("tab-history").await;
    b.select("history-group", &UNIT_A.0.to_string()).await;
    b.click("history-load").await;
    b.by_testid(&format!("play-{}", row["id"])).await;
    b.screenshot("console-history").await;
}

/// c. A guard talks (real Opus of the speech signal): the console shows
/// the talker on the group's floor and decodes the frames to sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_the_console_hears_a_guard_and_shows_the_talker() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let mut talker = terminal_in(&gw, GUARD_A1, UNIT_A).await;
    let b = gw.signed_in(EAST_OPERATOR, None, "c-hear").await;
    monitor_and_select(&b, UNIT_A.0).await;

    const FRAMES: u16 = 200;
    let pcm = speech(23, 4);
    let mut encoder = Encoder::new(EncoderConfig::default()).expect("an Opus encoder");
    let packets: Vec<bytes::Bytes> = pcm
        .chunks_exact(FRAME_SAMPLES)
        .take(usize::from(FRAMES))
        .map(|f| encoder.encode(f).expect("encoding"))
        .collect();
    let burst = talker.talk(UNIT_A, Class::Normal).await.expect("the floor");
    let talking = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (seq, p) in packets.iter().enumerate() {
            tick.tick().await;
            let seq = u16::try_from(seq).expect("FRAMES fits u16");
            talker
                .send_voice(UNIT_A, burst, seq, p, seq + 1 == FRAMES)
                .expect("voice");
        }
        talker.release(UNIT_A).expect("release");
        talker
    });
    b.wait_until(
        "the guard shown talking",
        WAIT,
        &format!(
            "const f = window.pttConsole.floor['{}']; return f && f.state === 'taken' && f.speaker === {GUARD_A1};",
            UNIT_A.0
        ),
    )
    .await;
    // The group's row names the talker.
    b.wait_until(
        "the talker's name on the group's row",
        WAIT,
        &format!(
            "return (document.querySelector('[data-testid=\"talker-{}\"]')?.textContent ?? '').includes('张伟');",
            UNIT_A.0
        ),
    )
    .await;
    b.screenshot("console-receiving").await;
    let mut loudest: f64 = 0.0;
    while !talking.is_finished() {
        let stats = b.console().await["stats"].clone();
        loudest = loudest.max(stats["lastRms"].as_f64().unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _talker = talking.await.expect("the talker's task");
    let stats = b
        .wait_until(
            "the guard's frames decoded",
            WAIT,
            &format!(
                "const s = window.pttConsole.stats; return s.framesDecoded >= {} && s;",
                FRAMES * 3 / 4
            ),
        )
        .await;
    eprintln!("console heard: {stats}, loudest 20 ms RMS {loudest:.3}");
    assert_eq!(stats["decodeErrors"], 0, "{stats}");
    assert!(
        loudest > 0.02,
        "the guard's voice played as silence: {loudest:.4}"
    );
    b.wait_until(
        "the floor idle after the guard released it",
        WAIT,
        &format!(
            "return window.pttConsole.floor['{}']?.state === 'idle';",
            UNIT_A.0
        ),
    )
    .await;
}

/// d. A dispatch composed in the console reaches the unit's guards; their
/// receipts (delivered, accepted, rejected with its reason) show on the
/// board, and the offline member stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_dispatch_reaches_the_unit_and_its_receipts_show_on_the_board() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let mut accepter = terminal_at(&gw, GUARD_A1).await;
    let mut rejecter = terminal_at(&gw, GUARD_A2).await;
    let mut reader = terminal_at(&gw, STAFF_A3).await;
    let b = gw.signed_in(EAST_OPERATOR, None, "d-dispatch").await;
    b.click("tab-dispatch").await;
    b.select("dispatch-kind", "1").await;
    b.fill("dispatch-title", "可疑车辆 浙G12345").await;
    b.fill("dispatch-text", "万达广场北门, 黑色轿车, 请核查")
        .await;
    b.select("dispatch-target-type", "group").await;
    b.select("dispatch-node", &UNIT_A.0.to_string()).await;
    b.click("dispatch-send").await;

    let got = alert_of(&mut accepter).await;
    assert_eq!(got.issuer, TerminalId(EAST_CONSOLE));
    assert_eq!(got.body.kind, AlertKind::Dispatch);
    assert_eq!(got.body.title, "可疑车辆 浙G12345");
    let id = got.alert;
    assert_eq!(alert_of(&mut rejecter).await.alert, id);
    assert_eq!(alert_of(&mut reader).await.alert, id);
    accepter
        .receipt(id, ReceiptStatus::Accepted, "")
        .await
        .expect("accepted");
    let reason = "正在处理另一起警情";
    rejecter
        .receipt(id, ReceiptStatus::Rejected, reason)
        .await
        .expect("rejected");

    let receipts = b
        .wait_until(
            "the receipts on the board",
            WAIT,
            &format!(
                "const a = window.pttConsole.alerts['{id}']; const r = a && a.receipts; \
                 return r && r['{GUARD_A1}'] === 3 && r['{GUARD_A2}'] === 4 && r['{STAFF_A3}'] === 1 && a;"
            ),
        )
        .await;
    eprintln!("board: {receipts}");
    assert_eq!(receipts["kind"], 1);
    assert_eq!(receipts["issuer"], EAST_CONSOLE);
    // The offline member: pending (stored, delivered when online).
    assert_eq!(receipts["receipts"][POLICE_A.to_string()], 0, "{receipts}");
    // The board's rows: the reason of the rejection, the accepted count,
    // the offline member's row.
    let row = b
        .wait_until(
            "the rejection's reason on the board",
            WAIT,
            &format!(
                "const t = document.querySelector('[data-testid=\"receipt-{id}-{GUARD_A2}\"]')?.textContent ?? ''; \
                 return t.includes({reason:?}) && t;"
            ),
        )
        .await;
    eprintln!("rejected row: {row}");
    assert!(b.has_testid(&format!("receipt-{id}-{POLICE_A}")).await);
    // The counts agree with the rows. (They come from the last
    // AlertStatus, which the console asks for every 10 s: they may lag
    // the rows that long.)
    for (status, n) in [
        ("accepted", 1),
        ("rejected", 1),
        ("delivered", 1),
        ("pending", 1),
    ] {
        b.wait_until(
            &format!("{n} {status} on the board's counts"),
            WAIT,
            &format!(
                "return (document.querySelector('[data-testid=\"board-count-{id}-{status}\"]')?.textContent ?? '').trim().endsWith(' {n}');"
            ),
        )
        .await;
    }
    b.screenshot("console-receipts").await;
}

/// e. An SOS from a guard shows on the console (banner, `pttConsole.sos`)
/// and is cancelled from it: the guard gets `AlertCancelled` naming the
/// console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_an_sos_shows_on_the_console_and_is_cancelled_from_it() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let mut raiser = gw.terminal(GUARD_B1).await;
    let b = gw.signed_in(EAST_OPERATOR, None, "e-sos").await;
    raiser
        .report_position(291_000_000, 1_196_500_000, 8)
        .expect("position");
    let alert = raiser.sos().await.expect("the SOS stored");
    let sos = b
        .wait_until(
            "the SOS on the console",
            WAIT,
            &format!("return window.pttConsole.sos.find(s => String(s.alert) === '{alert}');"),
        )
        .await;
    assert_eq!(sos["terminal"], GUARD_B1, "{sos}");
    assert_eq!(sos["cancelled_by"], Value::Null, "{sos}");
    let banner = b.text(&format!("sos-banner-{alert}")).await;
    assert!(
        banner.contains("赵磊"),
        "the banner names the raiser: {banner:?}"
    );
    b.screenshot("console-sos").await;

    b.click(&format!("sos-cancel-{alert}")).await;
    let by = tokio::time::timeout(
        WAIT,
        raiser.wait_for(|m| match m {
            ServerMsg::AlertCancelled { alert: a, by } if *a == alert => Some(Ok(*by)),
            _ => None,
        }),
    )
    .await
    .expect("AlertCancelled within the wait")
    .expect("AlertCancelled");
    assert_eq!(by, TerminalId(EAST_CONSOLE));
    b.wait_until(
        "the SOS shown cancelled by the console",
        WAIT,
        &format!(
            "return window.pttConsole.sos.some(s => String(s.alert) === '{alert}' && s.cancelled_by === {EAST_CONSOLE});"
        ),
    )
    .await;
    b.by_testid(&format!("sos-cancelled-by-{alert}")).await;
}

/// f. A drill launched from the console: its CSV report downloaded from
/// the console API is the CLI's `drill-report --format csv`, byte for
/// byte, and the console shows the units' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_a_drill_from_the_console_reports_as_the_cli_does() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let mut first = terminal_at(&gw, GUARD_A1).await;
    let mut second = terminal_at(&gw, GUARD_A2).await;
    let mut other_unit = terminal_at(&gw, GUARD_B1).await;
    let b = gw.signed_in(EAST_OPERATOR, None, "f-drill").await;
    b.click("tab-drills").await;
    b.fill("drill-title", "1-3-8 拉动演练 万达广场").await;
    b.select("drill-target-type", "subtree").await;
    b.select("drill-node", "4").await;
    b.click("drill-launch").await;

    let got = alert_of(&mut first).await;
    assert_eq!(got.body.kind, AlertKind::Drill);
    let id = got.alert;
    assert_eq!(alert_of(&mut second).await.alert, id);
    assert_eq!(alert_of(&mut other_unit).await.alert, id);
    first
        .receipt(id, ReceiptStatus::Accepted, "")
        .await
        .expect("accepted");
    first
        .receipt(id, ReceiptStatus::Arrived, "")
        .await
        .expect("arrived");
    second
        .receipt(id, ReceiptStatus::Accepted, "")
        .await
        .expect("accepted");
    b.wait_until(
        "the drill's receipts on the console",
        WAIT,
        &format!(
            "const r = window.pttConsole.alerts['{id}']?.receipts; \
             return r && r['{GUARD_A1}'] === 5 && r['{GUARD_A2}'] === 3 && r['{GUARD_B1}'] === 1;"
        ),
    )
    .await;
    // The live report (DrillReportQuery every few seconds) shows unit 5.
    b.by_testid(&format!("drill-row-{id}-5")).await;
    b.screenshot("console-drill").await;

    let csv = b
        .js_with(
            "const token = sessionStorage.getItem('pttConsole:token'); \
             return fetch(`/console/api/drills/${arguments[0]}/report.csv`, \
               {headers: {Authorization: `Bearer ${token}`}}) \
               .then(r => r.status === 200 ? r.text() : `HTTP ${r.status}`);",
            vec![id.to_string().into()],
        )
        .await;
    let csv = csv.as_str().expect("the CSV as text").to_owned();
    let org = gw.dir().join("city.toml");
    let cli = gw.cli(&[
        "drill-report",
        "--alert",
        &id.to_string(),
        "--format",
        "csv",
        "--org",
        org.to_str().expect("a UTF-8 path"),
    ]);
    eprintln!("drill report CSV:\n{csv}");
    assert_eq!(csv, cli, "the console's CSV differs from the CLI's");
    let unit = csv
        .lines()
        .find(|l| l.starts_with("unit,5,"))
        .unwrap_or_else(|| panic!("no row for unit 5:\n{csv}"));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let cells: Vec<&str> = unit.split(',').collect();
    let cell = |name: &str| cells[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(cell("accept_reached"), "1", "{unit}");
    assert_eq!(cell("arrive_reached"), "1", "{unit}");
}

/// g. An operator sees and commands his own station only: the tree API
/// holds his subtree, another station's group is forbidden, and a
/// dispatch to another station's guard is refused with
/// TARGET_NOT_ALLOWED, shown in the console; the guard gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_an_operator_cannot_see_or_command_another_station() {
    if browser::skipped() {
        return;
    }
    let gw = ConsoleGateway::start(&[
        (EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1),
        (WEST_OPERATOR.0, WEST_CONSOLE, WEST_OPERATOR.1),
    ])
    .await;
    let mut east_guard = gw.terminal(GUARD_A1).await;

    let mut west = gw.api();
    assert_eq!(west.signin(WEST_OPERATOR.0, WEST_OPERATOR.1).status, 200);
    let tree = west.get("/console/api/tree").json();
    assert_eq!(tree["root"], WEST_STATION, "{tree}");
    let mut nodes: Vec<u64> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, [9, 10, 11], "{tree}");
    let mut terminals: Vec<u64> = tree["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    terminals.sort_unstable();
    assert_eq!(terminals, [900, 901, 1101], "{tree}");
    assert_eq!(west.get("/console/api/groups/5/bursts").status, 403);
    let mut east = gw.api();
    assert_eq!(east.signin(EAST_OPERATOR.0, EAST_OPERATOR.1).status, 200);
    let tree = east.get("/console/api/tree").json();
    assert_eq!(tree["root"], EAST_STATION, "{tree}");
    let ids: Vec<u64> = tree["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.contains(&u64::from(GUARD_A1)) && !ids.contains(&u64::from(OTHER_GUARD)),
        "{tree}"
    );
    assert_eq!(east.get("/console/api/groups/11/bursts").status, 403);

    let b = gw.signed_in(WEST_OPERATOR, None, "g-scope").await;
    b.by_testid(&format!("member-{OTHER_GUARD}")).await;
    assert!(!b.has_testid(&format!("member-{GUARD_A1}")).await);
    assert!(!b.has_testid(&format!("group-{}", UNIT_A.0)).await);
    b.click("tab-dispatch").await;
    b.fill("dispatch-title", "越权派单").await;
    b.select("dispatch-target-type", "terminals").await;
    b.fill("dispatch-member-ids", &GUARD_A1.to_string()).await;
    b.click("dispatch-send").await;
    let error = b
        .wait_until(
            "the refusal shown",
            WAIT,
            "return document.querySelector('[data-testid=\"dispatch-error\"]').textContent.trim();",
        )
        .await;
    assert!(
        error.as_str().unwrap_or("").contains("TARGET_NOT_ALLOWED"),
        "{error}"
    );
    b.wait_until(
        "AlertRefused TARGET_NOT_ALLOWED among the console's frames",
        WAIT,
        "return window.pttConsole.events.some(e => e.type === 'AlertRefused' && e.code === 21);",
    )
    .await;
    b.screenshot("console-refused").await;
    // Refusals store nothing: the guard has no alert waiting.
    match tokio::time::timeout(Duration::from_secs(2), east_guard.next_alert()).await {
        Err(_) | Ok(Err(_)) => {}
        Ok(Ok(a)) => panic!("another station's console reached the guard: {a:?}"),
    }
}
