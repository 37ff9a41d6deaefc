//! Headless Chromium driven over WebDriver, for the console's end-to-end
//! tests (issue 13): `chromedriver` as a child process on a free loopback
//! port, one Chromium session through it, and the few things a test does
//! with a page (open it, fill and click controls by `data-testid`, read
//! `window.pttConsole`, wait for a condition, take a screenshot).
//!
//! Chromium runs with a fake microphone playing a WAV file (see
//! [`speech_wav`]) and the fake media UI (permission granted without a
//! prompt). When a test fails, the harness prints the browser's console
//! log and `window.pttConsole`, and saves a screenshot of the page under
//! [`screenshot_dir`] (`failed-<name>.png`).
//!
//! Browser tests run in CI: `scripts/setup.sh` installs `chromium` and
//! `chromium-driver`. A machine without them fails the tests with a message
//! saying so, unless [`SKIP_ENV`] is set to `1` ([`skipped`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Set to `1` to skip every browser test (a machine without Chromium, on
/// purpose). Unset, a missing Chromium fails the tests.
pub const SKIP_ENV: &str = "PTT_SKIP_BROWSER";

/// Set to `1` to copy the screenshots a test takes into `docs/screenshots/`
/// (the README shows them).
pub const UPDATE_SCREENSHOTS_ENV: &str = "PTT_UPDATE_SCREENSHOTS";

/// The longest a browser test waits for any one thing (chromedriver to
/// answer, a condition on the page): generous, for a shared two-core
/// machine; a condition that holds returns as soon as it is seen.
pub const WAIT: Duration = Duration::from_secs(30);

/// The window the console is laid out for (a command room's screen).
pub const WINDOW: (u32, u32) = (1920, 1080);

/// Whether the browser tests are skipped on purpose ([`SKIP_ENV`] is `1`).
/// Call first in every browser test and return when true; says so on
/// stderr.
pub fn skipped() -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{SKIP_ENV}=1: browser test skipped");
    }
    skip
}

/// `name` found on `PATH`, if it is.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The target directory the tests were built in (`target/` or
/// `$CARGO_TARGET_DIR`): test executables live in `<target>/<profile>/deps`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("<target>/<profile>/deps/<test>")
        .to_path_buf()
}

/// Where screenshots go: `<target>/console-screenshots/` (CI keeps it as
/// an artifact).
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("console-screenshots")
}

/// Options of a browser session.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Names the session's screenshots and failure output.
    pub name: String,
    /// The WAV file the fake microphone plays (looped). `None`: the fake
    /// device's beep.
    pub microphone: Option<PathBuf>,
}

/// A headless Chromium session through a `chromedriver` child process.
/// Dropping it ends the session and kills chromedriver and the browser; a
/// test that panics gets the browser's log and a screenshot first.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    /// chromedriver's base URL, `http://127.0.0.1:<port>`.
    driver_url: String,
    session: String,
    name: String,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with `options`. Panics
    /// with what to do when Chromium or chromedriver is missing.
    pub async fn start(options: Options) -> Browser {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            panic!(
                "the console's browser tests need Chromium and chromedriver on PATH: run \
                 scripts/setup.sh (it installs Debian's chromium and chromium-driver), or set \
                 {SKIP_ENV}=1 to skip these tests on purpose"
            );
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let driver_log = dir.path().join("chromedriver.log");
        let port = crate::free_tcp_port();
        let driver = spawn_in_own_group(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", driver_log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut browser_dir = dir.path().join("profile");
        std::fs::create_dir_all(&browser_dir).expect("a browser profile directory");
        browser_dir = browser_dir.canonicalize().expect("the profile's path");
        wait_for_driver(&driver_url, &driver_log);

        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", browser_dir.display()),
            "--use-fake-device-for-media-stream".to_owned(),
            "--use-fake-ui-for-media-stream".to_owned(),
            // Playback without a click first: the tests sign in with a
            // click anyway, but hear the console before any other gesture.
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
        ];
        if let Some(wav) = &options.microphone {
            // A missing file gives silence without an error: check first.
            assert!(
                wav.is_file(),
                "fake microphone {} is missing",
                wav.display()
            );
            args.push(format!(
                "--use-file-for-fake-audio-capture={}",
                wav.display()
            ));
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&driver_url),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "chromedriver did not start Chromium within {WAIT:?}:\n{}",
                tail(&driver_log)
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium: {e}\n{}",
                tail(&driver_log)
            )
        });
        let session = client
            .session_id()
            .await
            .expect("the session's id")
            .expect("a session was created");
        let browser = Browser {
            client,
            driver,
            driver_url,
            session,
            name: options.name,
            _dir: dir,
        };
        // `--window-size` sizes the window, not the page: headless Chromium
        // keeps some of the height for its (invisible) frame. The page gets
        // exactly WINDOW through the DevTools protocol (chromedriver's
        // `goog/cdp/execute`).
        let url = format!(
            "{}/session/{}/goog/cdp/execute",
            browser.driver_url, browser.session
        );
        let body = json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
            "width": WINDOW.0, "height": WINDOW.1, "deviceScaleFactor": 1, "mobile": false}});
        let status = agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "sizing the page to {WINDOW:?}");
        browser
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The element with `data-testid="<id>"`, waiting up to [`WAIT`] for
    /// it to exist.
    pub async fn by_testid(&self, id: &str) -> fantoccini::elements::Element {
        let css = format!("[data-testid=\"{id}\"]");
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.find(Locator::Css(&css)).await {
                Ok(e) => return e,
                Err(e) if Instant::now() >= deadline => {
                    panic!("no element {css} within {WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Whether an element with `data-testid="<id>"` exists now.
    pub async fn has_testid(&self, id: &str) -> bool {
        let css = format!("[data-testid=\"{id}\"]");
        self.client.find(Locator::Css(&css)).await.is_ok()
    }

    /// Replaces the text of the input `data-testid="<id>"` with `text`.
    pub async fn fill(&self, id: &str, text: &str) {
        let e = self.by_testid(id).await;
        e.clear()
            .await
            .unwrap_or_else(|err| panic!("clearing {id}: {err}"));
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("typing into {id}: {err}"));
    }

    /// Clicks the element `data-testid="<id>"`.
    pub async fn click(&self, id: &str) {
        self.by_testid(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {id}: {e}"));
    }

    /// Chooses the option `value` of the select `data-testid="<id>"`,
    /// waiting up to [`WAIT`] for the page to have filled it in.
    pub async fn select(&self, id: &str, value: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.by_testid(id).await.select_by_value(value).await {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("no option {value:?} in {id} within {WAIT:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The visible text of the element `data-testid="<id>"`.
    pub async fn text(&self, id: &str) -> String {
        self.by_testid(id)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {id}: {e}"))
    }

    /// Presses `key` (a character or a [`fantoccini::key::Key`] as char)
    /// down, and keeps it down until [`Browser::key_up`]: the talk key.
    pub async fn key_down(&self, key: char) {
        let actions = KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("key down {key:?}: {e}"));
    }

    /// Releases `key`.
    pub async fn key_up(&self, key: char) {
        let actions = KeyActions::new("keyboard".into()).then(KeyAction::Up { value: key });
        self.client
            .perform_actions(actions)
            .await
            .unwrap_or_else(|e| panic!("key up {key:?}: {e}"));
    }

    /// Runs `script` (a function body: `return ...;`) in the page and
    /// returns its result as JSON.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script` with `args` (`arguments[0]`, ...).
    pub async fn js_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// A JSON copy of `window.pttConsole` (the console's test hooks),
    /// `null` before the page set it.
    pub async fn console(&self) -> Value {
        self.js(PTT_CONSOLE_JSON).await
    }

    /// Polls `script` every 100 ms until it returns something truthy (not
    /// `null`, `false`, `0`, `""`), and returns that; panics after
    /// `timeout` naming `what`, with the last value and the console's
    /// state.
    pub async fn wait_until(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.client.execute(script, vec![]).await;
            match &value {
                Ok(v) if truthy(v) => return v.clone(),
                _ if Instant::now() >= deadline => {
                    let state = self.console().await;
                    panic!(
                        "{what}: not within {timeout:?}; last value {value:?}\n\
                         window.pttConsole = {state:#}"
                    );
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Saves a PNG of the page to `<screenshot_dir>/<file>.png`, and to
    /// `docs/screenshots/<file>.png` as well when [`UPDATE_SCREENSHOTS_ENV`]
    /// is `1` (a view of the console the README shows). Returns the first
    /// path.
    pub async fn screenshot(&self, file: &str) -> PathBuf {
        let (path, png) = self.save_screenshot(file).await;
        if std::env::var(UPDATE_SCREENSHOTS_ENV).is_ok_and(|v| v == "1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&docs).expect("creating docs/screenshots");
            std::fs::write(docs.join(format!("{file}.png")), &png)
                .expect("writing docs/screenshots");
        }
        path
    }

    /// As [`Browser::screenshot`], to `<screenshot_dir>` only (a test
    /// page, not a view for the documentation).
    pub async fn screenshot_artifact(&self, file: &str) -> PathBuf {
        self.save_screenshot(file).await.0
    }

    async fn save_screenshot(&self, file: &str) -> (PathBuf, Vec<u8>) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {file}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!((size(16), size(20)), WINDOW, "the screenshot's size");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("creating the screenshot directory");
        let path = dir.join(format!("{file}.png"));
        std::fs::write(&path, &png).expect("writing the screenshot");
        (path, png)
    }

    /// The browser's console messages since the last call (WebDriver's
    /// `browser` log), one line each: `LEVEL message`.
    pub fn browser_log(&self) -> Vec<String> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        let Ok(mut response) = agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(r#"{"type":"browser"}"#)
        else {
            return vec![];
        };
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        value["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session and stops chromedriver (as dropping does).
    pub async fn close(self) {
        // Drop does the work; it blocks only on loopback calls.
        drop(self);
    }

    /// What a failed test needs to see: the browser's log, the console's
    /// state, a screenshot. Blocking calls straight to chromedriver: it
    /// runs in `Drop`, while the test unwinds.
    fn dump_on_failure(&self) {
        let name = if self.name.is_empty() {
            "browser"
        } else {
            &self.name
        };
        eprintln!("---- {name}: browser console log ----");
        for line in self.browser_log() {
            eprintln!("{line}");
        }
        let url = format!("{}/session/{}/execute/sync", self.driver_url, self.session);
        let body = json!({"script": PTT_CONSOLE_JSON, "args": []}).to_string();
        if let Ok(mut r) = agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
        {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            eprintln!("---- {name}: window.pttConsole ----\n{text}");
        }
        let url = format!("{}/session/{}/screenshot", self.driver_url, self.session);
        if let Ok(mut r) = agent().get(&url).call() {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if let Some(png) = value["value"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            {
                let dir = screenshot_dir();
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("failed-{name}.png"));
                if std::fs::write(&path, png).is_ok() {
                    eprintln!("---- {name}: screenshot {} ----", path.display());
                }
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_on_failure();
        }
        // Ending the session makes chromedriver quit Chromium; then the
        // whole process group goes, in case Chromium outlived it.
        let url = format!("{}/session/{}", self.driver_url, self.session);
        let _ = agent().delete(&url).call();
        kill_group(&mut self.driver);
    }
}

/// `JSON.parse(JSON.stringify(window.pttConsole))`: a plain copy, whatever
/// the page keeps in it.
const PTT_CONSOLE_JSON: &str = "return window.pttConsole === undefined ? null : \
     JSON.parse(JSON.stringify(window.pttConsole));";

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A blocking HTTP client for chromedriver on loopback, answering every
/// status.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Waits until chromedriver answers `/status` ready.
fn wait_for_driver(url: &str, log: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(mut r) = agent().get(&format!("{url}/status")).call() {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            if body.contains("\"ready\":true") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer within {WAIT:?}:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Spawns `cmd` as the leader of a new process group, so that it and
/// everything it starts (Chromium's processes) can be killed together.
fn spawn_in_own_group(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// Kills the process group `child` leads, and reaps `child`.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Sample rate of the fake microphone's WAV: what Chromium's fake capture
/// and the console's `AudioContext` use.
pub const MIC_RATE: u32 = 48_000;

/// Writes `seconds` of the speech-like test signal
/// ([`ptt_terminal_sim::speech::Speech`], seed `seed`) to `path` as a
/// 48 kHz mono 16-bit WAV for the fake microphone, normalised to a peak
/// of -3 dBFS. Returns the 16 kHz source (what a simulated terminal would
/// send), for comparisons.
pub fn speech_wav(path: &Path, seed: u64, seconds: u32) -> Vec<i16> {
    let frame = ptt_codec::audio::FRAME_SAMPLES;
    let mut speech = ptt_terminal_sim::speech::Speech::new(seed);
    let mut pcm = vec![0i16; frame * 50 * seconds as usize];
    for f in pcm.chunks_mut(frame) {
        speech.next_frame(f);
    }
    let peak = pcm
        .iter()
        .map(|s| i32::from(*s).abs())
        .max()
        .unwrap_or(0)
        .max(1);
    let gain = 0.708 * 32767.0 / peak as f64;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: MIC_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    // 16 kHz to 48 kHz: linear interpolation, three samples per source one.
    let up = MIC_RATE / ptt_codec::audio::SAMPLE_RATE;
    for (i, &s) in pcm.iter().enumerate() {
        let next = pcm.get(i + 1).copied().unwrap_or(s);
        for k in 0..up {
            let t = f64::from(k) / f64::from(up);
            let v = (f64::from(s) * (1.0 - t) + f64::from(next) * t) * gain;
            w.write_sample(v.round().clamp(-32768.0, 32767.0) as i16)
                .expect("writing a sample");
        }
    }
    w.finalize().expect("finishing the WAV");
    pcm
}

/// RMS of `pcm` relative to full scale (0..1).
pub fn rms(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    let sum: f64 = pcm.iter().map(|&s| (f64::from(s) / 32768.0).powi(2)).sum();
    (sum / pcm.len() as f64).sqrt()
}

/// Serves `html` to every request on a loopback port until dropped (a page
/// of the test's own, in a secure context: `http://127.0.0.1` is one).
#[derive(Debug)]
pub struct Page {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Page {
    /// Starts serving. Call inside a tokio runtime.
    pub async fn serve(html: &str) -> Page {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}/", listener.local_addr().expect("its address"));
        let body = html.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    // One request per connection; its headers end the read.
                    let mut got = 0;
                    while got < buf.len() {
                        match stream.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Page { url, task }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.task.abort();
    }
}
