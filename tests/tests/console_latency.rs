//! The browser console's latency figures (issue 13, BENCHMARKS.md "Browser
//! console latency"): a measurement, not a test. It asserts only that each
//! figure was measured, never how fast; it is `#[ignore]`d so that the
//! suite does not run it. Run it (release build, about two minutes):
//!
//! ```text
//! cargo build --release -p ptt-gateway --bin ptt-gateway
//! cargo test --release -p ptt-tests --test console_latency -- --ignored --nocapture
//! ```
//!
//! The real gateway process with the console on (http on a free loopback
//! port), operator `wang` at police station 3's console, the console page
//! in headless Chromium at 1920x1080 with the fake microphone playing the
//! speech WAV, and two native terminals of the reference library (guards
//! 501 and 502 of unit 5) in this process. The page records latency marks
//! (`window.pttConsole.timing`, gateway/console/js/timing.js) in wall-clock
//! milliseconds (`performance.timeOrigin + performance.now()`); this
//! process stamps its sends and receives with `SystemTime`. Both clocks are
//! the same machine's; the report includes a check of their agreement.
//!
//! Phases:
//! a. PTT press to floor grant: the Space key pressed over WebDriver, from
//!    the key event's own time stamp to FloorGranted read in the page.
//! b. console -> terminal: bursts from the console's microphone; each
//!    datagram from the page handing it to WebTransport to guard 501
//!    receiving it.
//! c. terminal -> console: guard 502 talks real Opus of the speech signal;
//!    each datagram from its send to the page reading it (before the jitter
//!    buffer), and to the page's AudioDecoder output (jitter buffer and
//!    WebCodecs decode included). In the same bursts guard 501 listens: the
//!    native terminal -> native terminal baseline.
//!
//! Environment: `PTT_LATENCY_PRESSES` (default 60), `PTT_LATENCY_BURSTS`
//! (default 5, each `PTT_LATENCY_BURST_FRAMES` = 150 frames, 3 s),
//! `PTT_LATENCY_REPORT` (default `<target>/bench/console-latency.json`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ptt_codec::audio::{Encoder, EncoderConfig, FRAME_SAMPLES};
use ptt_codec::Class;
use ptt_terminal_sim::terminal::Terminal;
use ptt_tests::browser::{self, Browser, WAIT};
use ptt_tests::console::{monitor_and_select, ConsoleGateway, EAST_CONSOLE, EAST_OPERATOR};
use ptt_tests::org::{GUARD_A1, GUARD_A2, UNIT_A};
use serde_json::{json, Value};

/// Wall-clock milliseconds since the epoch, as the page's marks.
fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
        * 1000.0
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A voice datagram a native terminal received: (speaker, burst, seq) at
/// wall-clock ms.
type Heard = Arc<Mutex<Vec<(u32, u16, u16, f64)>>>;

/// Distribution of latencies in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    n: usize,
    min: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles of `values`; `None` when empty.
    fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            n: v.len(),
            min: v[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }

    fn json(s: Option<Summary>) -> Value {
        match s {
            None => Value::Null,
            Some(s) => json!({"n": s.n, "min_ms": r3(s.min), "p50_ms": r3(s.p50),
                "p90_ms": r3(s.p90), "p99_ms": r3(s.p99), "max_ms": r3(s.max),
                "mean_ms": r3(s.mean)}),
        }
    }

    fn row(name: &str, s: Option<Summary>) -> String {
        match s {
            None => format!("| {name} | 0 | - | - | - | - | - |"),
            Some(s) => format!(
                "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                s.n, s.min, s.p50, s.p90, s.p99, s.max
            ),
        }
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn u(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Polls `script` every 20 ms (finer than `Browser::wait_until`, coarse
/// enough not to load the page's main thread) until it returns true. Only
/// paces the measurement: the figures are the page's own marks.
async fn poll(b: &Browser, what: &str, script: &str) {
    let deadline = Instant::now() + WAIT;
    while b.js(script).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn floor_is(state: &str) -> String {
    format!(
        "return window.pttConsole.floor['{}']?.state === '{state}';",
        UNIT_A.0
    )
}

/// Turns the page's latency marks on, empty.
async fn reset_marks(b: &Browser) {
    b.js("window.pttConsole.timing = {presses: [], sent: [], received: [], decoded: []}; return true;")
        .await;
}

async fn marks(b: &Browser, list: &str) -> Vec<Value> {
    b.js_with(
        "return window.pttConsole.timing[arguments[0]];",
        vec![list.into()],
    )
    .await
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// Pause after the floor is idle again before the next press. The page
/// sends FloorRelease 20 ms after the END frame, and the gateway ends the
/// burst on END already: a press inside those 20 ms is ignored as the
/// holder's (see docs/notes/h-console-latency.md). No hand is that fast.
const BETWEEN_PRESSES: Duration = Duration::from_millis(150);

/// One press of the Space key: down, held until granted and `hold` more,
/// up, then waits until the floor is idle again and [`BETWEEN_PRESSES`].
async fn press(b: &Browser, hold: Duration) {
    b.key_down(' ').await;
    poll(b, "the floor granted to the console", &floor_is("granted")).await;
    tokio::time::sleep(hold).await;
    b.key_up(' ').await;
    poll(b, "the floor idle again", &floor_is("idle")).await;
    tokio::time::sleep(BETWEEN_PRESSES).await;
}

/// Estimates how far the page's wall clock is from this process's: the
/// page's `timeOrigin + now()` minus the midpoint of the WebDriver call
/// around it, for the call with the shortest round trip of `n`. Returns
/// (offset ms, that round trip ms).
async fn clock_offset(b: &Browser, n: usize) -> (f64, f64) {
    let mut best = (0.0, f64::INFINITY);
    for _ in 0..n {
        let before = wall_ms();
        let page = b
            .js("return performance.timeOrigin + performance.now();")
            .await
            .as_f64()
            .expect("a number");
        let after = wall_ms();
        if after - before < best.1 {
            best = (page - (before + after) / 2.0, after - before);
        }
    }
    best
}

/// A native terminal recording every voice datagram it receives, until
/// the returned task is aborted.
fn listen(t: Terminal) -> (Heard, tokio::task::JoinHandle<Terminal>) {
    let heard: Heard = Arc::default();
    let log = heard.clone();
    let task = tokio::spawn(async move {
        while let Ok(v) = t.recv_voice().await {
            let at = wall_ms();
            let h = v.header;
            log.lock()
                .expect("the listener's log is not poisoned")
                .push((h.speaker, h.burst, h.seq, at));
        }
        t
    });
    (heard, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md), run on purpose with --ignored"]
async fn console_latency() {
    if browser::skipped() {
        return;
    }
    let presses = env_or("PTT_LATENCY_PRESSES", 60);
    let bursts = env_or("PTT_LATENCY_BURSTS", 5);
    let burst_frames = env_or("PTT_LATENCY_BURST_FRAMES", 150);
    let report_path = std::env::var("PTT_LATENCY_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| browser::target_dir().join("bench/console-latency.json"));
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let wav = dir.path().join("speech.wav");
    browser::speech_wav(&wav, 11, 8);
    let gw = ConsoleGateway::start(&[(EAST_OPERATOR.0, EAST_CONSOLE, EAST_OPERATOR.1)]).await;
    let mut listener = gw.terminal(GUARD_A1).await;
    listener.join(UNIT_A).await.expect("guard 501 joins unit 5");
    let mut talker = gw.terminal(GUARD_A2).await;
    talker.join(UNIT_A).await.expect("guard 502 joins unit 5");
    let (heard, listening) = listen(listener);

    let b = gw
        .signed_in(EAST_OPERATOR, Some(wav), "console-latency")
        .await;
    // Unit 5 is not among the defaults (the own node and its children).
    monitor_and_select(&b, UNIT_A.0).await;
    let clock_before = clock_offset(&b, 20).await;

    // a. Press to grant. The first press opens the microphone and the
    // encoder: a warm-up, reported apart.
    reset_marks(&b).await;
    press(&b, Duration::from_millis(300)).await;
    for _ in 0..presses {
        press(&b, Duration::from_millis(100)).await;
    }
    let press_marks = marks(&b, "presses").await;
    assert_eq!(press_marks.len(), presses + 1, "one mark per press");
    let warmup = &press_marks[0];
    let grant = |m: &Value, from: &str| Some(f(m, "granted")? - f(m, from)?);
    let from_event: Vec<f64> = press_marks[1..]
        .iter()
        .filter_map(|m| grant(m, "event"))
        .collect();
    let from_handler: Vec<f64> = press_marks[1..]
        .iter()
        .filter_map(|m| grant(m, "down"))
        .collect();
    let first_frame: Vec<f64> = press_marks[1..]
        .iter()
        .filter_map(|m| Some(f(m, "firstFrame")? - f(m, "granted")?))
        .collect();
    assert_eq!(
        from_event.len(),
        presses,
        "every press granted: {press_marks:?}"
    );

    // b. Console -> terminal.
    heard.lock().expect("not poisoned").clear();
    reset_marks(&b).await;
    for _ in 0..bursts {
        press(&b, Duration::from_millis(20 * burst_frames as u64)).await;
    }
    // The last frames' way to the listener.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = marks(&b, "sent").await;
    let got: HashMap<(u16, u16), f64> = heard
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|h| h.0 == EAST_CONSOLE)
        .map(|h| ((h.1, h.2), h.3))
        .collect();
    let mut console_to_terminal = vec![];
    for s in &sent {
        let (Some(burst), Some(seq), Some(at)) = (u(s, "burst"), u(s, "seq"), f(s, "at")) else {
            continue;
        };
        let key = (
            u16::try_from(burst).expect("a u16 burst"),
            u16::try_from(seq).expect("a u16 seq"),
        );
        if let Some(recv) = got.get(&key) {
            console_to_terminal.push(recv - at);
        }
    }
    let console_sent = sent.len();
    let console_heard = console_to_terminal.len();

    // c. Terminal -> console, and the native baseline in the same bursts.
    heard.lock().expect("not poisoned").clear();
    reset_marks(&b).await;
    let mut speech = ptt_terminal_sim::speech::Speech::new(23);
    let mut encoder = Encoder::new(EncoderConfig::default()).expect("an Opus encoder");
    let mut talker_sent: HashMap<(u16, u16), f64> = HashMap::new();
    for _ in 0..bursts {
        let packets: Vec<bytes::Bytes> = (0..burst_frames)
            .map(|_| {
                let mut pcm = [0i16; FRAME_SAMPLES];
                speech.next_frame(&mut pcm);
                encoder.encode(&pcm).expect("encoding")
            })
            .collect();
        let burst = talker
            .talk(UNIT_A, Class::Normal)
            .await
            .expect("guard 502 gets the floor");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (i, p) in packets.iter().enumerate() {
            tick.tick().await;
            let seq = u16::try_from(i).expect("a burst fits u16 frames");
            talker_sent.insert((burst, seq), wall_ms());
            talker
                .send_voice(UNIT_A, burst, seq, p, i + 1 == packets.len())
                .expect("voice");
        }
        talker.release(UNIT_A).expect("release");
        poll(&b, "the floor idle at the console", &floor_is("idle")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = marks(&b, "received").await;
    let decoded = marks(&b, "decoded").await;
    let key_of = |m: &Value| -> Option<(u16, u16)> {
        Some((
            u16::try_from(u(m, "burst")?).ok()?,
            u16::try_from(u(m, "seq")?).ok()?,
        ))
    };
    let since_sent = |m: &Value, field: &str| -> Option<f64> {
        Some(f(m, field)? - talker_sent.get(&key_of(m)?)?)
    };
    let terminal_to_console: Vec<f64> = received
        .iter()
        .filter(|m| u(m, "speaker") == Some(u64::from(GUARD_A2)))
        .filter_map(|m| since_sent(m, "at"))
        .collect();
    let to_decoded: Vec<f64> = decoded.iter().filter_map(|m| since_sent(m, "at")).collect();
    let decode_only: Vec<f64> = decoded
        .iter()
        .filter_map(|m| Some(f(m, "at")? - f(m, "pulled")?))
        .collect();
    let received_at: HashMap<(u16, u16), f64> = received
        .iter()
        .filter_map(|m| Some((key_of(m)?, f(m, "at")?)))
        .collect();
    let in_jitter: Vec<f64> = decoded
        .iter()
        .filter_map(|m| Some(f(m, "pulled")? - received_at.get(&key_of(m)?)?))
        .collect();
    // Frames taken from the jitter buffer whose decoder output never came.
    let undecoded: Vec<Value> = decoded
        .iter()
        .filter(|m| f(m, "at").is_none())
        .map(|m| json!([u(m, "burst"), u(m, "seq")]))
        .collect();
    let native: Vec<f64> = heard
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|h| h.0 == GUARD_A2)
        .filter_map(|h| Some(h.3 - talker_sent.get(&(h.1, h.2))?))
        .collect();
    let clock_after = clock_offset(&b, 20).await;
    let stats = b.console().await["stats"].clone();
    listening.abort();

    // The report.
    let figures = [
        (
            "a. press (key event) -> FloorGranted in the page",
            Summary::of(&from_event),
        ),
        (
            "a. press (page's handler) -> FloorGranted",
            Summary::of(&from_handler),
        ),
        (
            "a. FloorGranted -> first voice datagram sent",
            Summary::of(&first_frame),
        ),
        (
            "b. console send -> native terminal receive",
            Summary::of(&console_to_terminal),
        ),
        (
            "c. terminal send -> console receive (before jitter buffer)",
            Summary::of(&terminal_to_console),
        ),
        (
            "c. terminal send -> console decoded (jitter buffer + decode)",
            Summary::of(&to_decoded),
        ),
        ("c. in the page's jitter buffer", Summary::of(&in_jitter)),
        ("c. WebCodecs decode alone", Summary::of(&decode_only)),
        (
            "baseline: terminal send -> native terminal receive",
            Summary::of(&native),
        ),
    ];
    println!("\n| figure (ms) | n | min | p50 | p90 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, s) in &figures {
        println!("{}", Summary::row(name, *s));
    }
    let warmup_ms = grant(warmup, "event");
    println!(
        "warm-up press (opens the microphone): {warmup_ms:?} ms; console frames sent {console_sent}, \
         heard by the terminal {console_heard}; terminal frames sent {}, read by the page {}, \
         decoded {}; native listener {}",
        talker_sent.len(),
        terminal_to_console.len(),
        to_decoded.len(),
        native.len()
    );
    println!(
        "clock check (page minus this process, shortest WebDriver round trip): before {:.3} ms \
         (rtt {:.3}), after {:.3} ms (rtt {:.3})",
        clock_before.0, clock_before.1, clock_after.0, clock_after.1
    );
    let chromium = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let report = json!({
        "measurement": "console-latency",
        "unix_ms": wall_ms().round(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu,
            "loadavg_before": load_before.trim(),
            "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "chromium": chromium,
        "window": [browser::WINDOW.0, browser::WINDOW.1],
        "settings": {"presses": presses, "bursts": bursts, "burst_frames": burst_frames},
        "clock_offset_ms": {
            "before": r3(clock_before.0), "before_rtt": r3(clock_before.1),
            "after": r3(clock_after.0), "after_rtt": r3(clock_after.1),
        },
        "press_to_grant": {
            "from_key_event": Summary::json(Summary::of(&from_event)),
            "from_page_handler": Summary::json(Summary::of(&from_handler)),
            "grant_to_first_frame": Summary::json(Summary::of(&first_frame)),
            "warmup_from_key_event_ms": warmup_ms.map(r3),
        },
        "console_to_terminal": {
            "frames_sent": console_sent,
            "frames_received": console_heard,
            "latency": Summary::json(Summary::of(&console_to_terminal)),
        },
        "terminal_to_console": {
            "frames_sent": talker_sent.len(),
            "frames_received": terminal_to_console.len(),
            "frames_decoded": to_decoded.len(),
            "receive": Summary::json(Summary::of(&terminal_to_console)),
            "decoded": Summary::json(Summary::of(&to_decoded)),
            "jitter_buffer": Summary::json(Summary::of(&in_jitter)),
            "decode_only": Summary::json(Summary::of(&decode_only)),
            "pulled_not_decoded": undecoded,
        },
        // Clock-free: the page's clock offset cancels in the sum of the two
        // directions' medians (b + c receive), against twice the native one.
        "two_way_p50_ms": {
            "console": Summary::of(&console_to_terminal)
                .zip(Summary::of(&terminal_to_console))
                .map(|(b, c)| r3(b.p50 + c.p50)),
            "native": Summary::of(&native).map(|n| r3(2.0 * n.p50)),
        },
        "native_baseline": {
            "frames_received": native.len(),
            "latency": Summary::json(Summary::of(&native)),
        },
        "page_stats": stats,
        "elapsed_s": r3(started.elapsed().as_secs_f64()),
    });
    if let Some(parent) = report_path.parent() {
        std::fs::create_dir_all(parent).expect("the report's directory");
    }
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .expect("writing the report");
    println!("report: {}", report_path.display());

    // Measured, not judged: every figure has samples.
    for (name, s) in &figures {
        assert!(s.is_some(), "{name}: nothing measured");
    }
}
