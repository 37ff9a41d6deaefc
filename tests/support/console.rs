//! The command-room console's end-to-end setting (issue 13): the real
//! `ptt-gateway serve` process with its HTTP surface on a free loopback
//! port, the test org with a console at each police station, operator
//! accounts made with `ptt-gateway operator add`, and a blocking client
//! for the console's HTTP API (`/console/api`).
//!
//! The browser side is [`crate::browser`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use ptt_gateway::org::auth::ProvisioningKey;
use ptt_terminal_sim::terminal::{self, Terminal};
use serde_json::Value;

use crate::hostile::SuiteLock;
use crate::{bin, free_tcp_port, free_udp_port};

/// The console tests' org: [`crate::org::ORG`] (police station 3 with its
/// command room console 300 and units 5 and 6; police station 9 with unit
/// 11) and a command room console 900 at police station 9.
pub fn org() -> String {
    format!(
        "{}\n{}",
        crate::org::ORG,
        r#"
[[terminal]]
id = 900
name = "城西派出所指挥室"
role = "dispatcher"
kind = "console"
node = 9
"#
    )
}

/// The command room console of police station 3 (城东派出所).
pub const EAST_CONSOLE: u32 = 300;
/// Its node.
pub const EAST_STATION: u32 = 3;
/// The command room console of police station 9 (城西派出所).
pub const WEST_CONSOLE: u32 = 900;
/// Its node.
pub const WEST_STATION: u32 = 9;
/// The operator of the East command room.
pub const EAST_OPERATOR: (&str, &str) = ("wang", "correct horse battery staple");
/// The operator of the West command room.
pub const WEST_OPERATOR: (&str, &str) = ("zhao", "west station night shift 2026");

/// The real gateway with its HTTP surface, serving [`org`]; killed when
/// dropped (its log printed if the test is failing).
#[derive(Debug)]
pub struct ConsoleGateway {
    /// The QUIC (and WebTransport) address.
    pub addr: SocketAddr,
    /// The HTTP surface's port on 127.0.0.1.
    pub http_port: u16,
    /// The data directory.
    pub data: PathBuf,
    /// The provisioning key terminals' credentials derive from.
    pub key: ProvisioningKey,
    /// The gateway's certificate, for the simulated terminals.
    pub roots: rustls::RootCertStore,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
    _alone: SuiteLock,
}

impl ConsoleGateway {
    /// Creates the operator accounts `operators` (name, console terminal,
    /// password), then starts `ptt-gateway serve` with `--http` on a free
    /// port and waits until it listens. Call inside a tokio runtime.
    ///
    /// Takes the hostile suite's machine-wide lock first: a headless
    /// Chromium is as heavy as an attack on a two-core runner, and the
    /// hostile tests' bounds hold for one heavy test at a time.
    pub async fn start(operators: &[(&str, u32, &str)]) -> ConsoleGateway {
        crate::init_tracing();
        let alone = SuiteLock::acquire().await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let org = dir.path().join("city.toml");
        std::fs::write(&org, self::org()).expect("writing the org file");
        let key_file = dir.path().join("city.key");
        let key = ProvisioningKey::generate();
        key.save(&key_file).expect("writing the provisioning key");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("the data directory");
        for (name, terminal, password) in operators {
            add_operator(&data, &org, name, *terminal, password);
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
            .parse()
            .expect("a loopback address");
        let http_port = free_tcp_port();
        let log = dir.path().join("gateway.log");
        let child = Command::new(bin("ptt-gateway"))
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--org"])
            .arg(&org)
            .arg("--provisioning-key")
            .arg(&key_file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .env(
                "RUST_LOG",
                std::env::var("CONSOLE_GATEWAY_LOG")
                    .unwrap_or_else(|_| "info,quinn=warn,rustls=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the gateway log"))
            .spawn()
            .expect("starting ptt-gateway");
        let mut gw = ConsoleGateway {
            addr,
            http_port,
            data,
            key,
            roots: rustls::RootCertStore::empty(),
            child,
            log,
            dir,
            _alone: alone,
        };
        gw.wait_listening().await;
        gw.roots = terminal::load_ca(&gw.data.join("cert.pem")).expect("the gateway's certificate");
        gw
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = self.log_text().contains("gateway listening")
                && std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok();
            if listening {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("polling the gateway") {
                panic!("the gateway exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not listen within 20 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The console page.
    pub fn console_url(&self) -> String {
        format!("{}/console/", self.base_url())
    }

    /// Starts a browser named `name` (with `microphone` as its fake
    /// microphone) on the console page and signs `operator` (name,
    /// password) in; returns once the console is online (its
    /// WebTransport session welcomed).
    pub async fn signed_in(
        &self,
        operator: (&str, &str),
        microphone: Option<PathBuf>,
        name: &str,
    ) -> crate::browser::Browser {
        let b = crate::browser::Browser::start(crate::browser::Options {
            name: name.into(),
            microphone,
        })
        .await;
        b.goto(&self.console_url()).await;
        b.fill("signin-name", operator.0).await;
        b.fill("signin-password", operator.1).await;
        b.click("signin-submit").await;
        b.wait_until(
            "the console online over WebTransport",
            crate::browser::WAIT,
            "return window.pttConsole && window.pttConsole.state === 'online';",
        )
        .await;
        b
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects terminal `id` through the reference client, from a UDP
    /// socket of its own.
    pub async fn terminal(&self, id: u32) -> Terminal {
        let endpoint = terminal::endpoint("127.0.0.1:0".parse().expect("an address"), &self.roots)
            .expect("a client endpoint");
        Terminal::connect(
            &endpoint,
            self.addr,
            "localhost",
            TerminalId(id),
            &self.key.credential(TerminalId(id)),
        )
        .await
        .unwrap_or_else(|e| panic!("terminal {id}: {e}\n{}", self.log_text()))
    }

    /// Runs `ptt-gateway <args> --data-dir <data>` and returns its stdout;
    /// panics with its output when it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bin("ptt-gateway"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .expect("running ptt-gateway");
        assert!(
            out.status.success(),
            "ptt-gateway {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// A client of the console API, signed out.
    pub fn api(&self) -> Api {
        Api {
            base: self.base_url(),
            token: None,
        }
    }
}

impl Drop for ConsoleGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- gateway log (tail) ----\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ptt-gateway operator add <name> --terminal <terminal> --password-stdin`
/// on the data directory `data`.
fn add_operator(data: &Path, org: &Path, name: &str, terminal: u32, password: &str) {
    let mut child = Command::new(bin("ptt-gateway"))
        .args(["operator", "add", name, "--terminal", &terminal.to_string()])
        .arg("--password-stdin")
        .arg("--data-dir")
        .arg(data)
        .arg("--org")
        .arg(org)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ptt-gateway operator add");
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("writing the password");
    let out = child.wait_with_output().expect("ptt-gateway operator add");
    assert!(
        out.status.success(),
        "ptt-gateway operator add {name}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blocking client of the console's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    /// The session token once signed in.
    pub token: Option<String>,
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, empty when none.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics naming the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Api {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    /// `POST /console/api/signin`; keeps the token on success.
    pub fn signin(&mut self, name: &str, password: &str) -> Answer {
        let body = serde_json::json!({"name": name, "password": password}).to_string();
        let answer = self.post("/console/api/signin", Some(body));
        if answer.status == 200 {
            self.token = answer.json()["token"].as_str().map(str::to_owned);
        }
        answer
    }

    /// GET `path` with the token, if any.
    pub fn get(&self, path: &str) -> Answer {
        let mut r = Self::agent().get(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        answer(path, r.call())
    }

    /// POST `path` with `body` (JSON) and the token, if any.
    pub fn post(&self, path: &str, body: Option<String>) -> Answer {
        let mut r = Self::agent().post(&format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => r.header("content-type", "application/json").send(b),
            None => r.send_empty(),
        };
        answer(path, result)
    }
}

fn answer(path: &str, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = result.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .body_mut()
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{path} body: {e}"));
    Answer {
        status,
        content_type,
        body,
    }
}

/// Ticks `group`'s monitor box, again if a re-render right after sign-in
/// took the first click, until the gateway has answered Joined; then
/// selects the group for the talk key.
pub async fn monitor_and_select(b: &crate::browser::Browser, group: u32) {
    let wait = crate::browser::WAIT;
    let joined = format!(
        "return window.pttConsole.events.some(e => e.type === 'Joined' && e.group === {group});"
    );
    let deadline = Instant::now() + wait;
    while b.js(&joined).await != Value::Bool(true) {
        assert!(
            Instant::now() < deadline,
            "group {group} not joined within {wait:?}"
        );
        let checked = b
            .js(&format!(
                "return document.querySelector('[data-testid=\"monitor-{group}\"]')?.checked ?? null;"
            ))
            .await;
        if checked == Value::Bool(false) {
            b.click(&format!("monitor-{group}")).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.click(&format!("group-{group}")).await;
    b.wait_until(
        &format!("group {group} selected"),
        wait,
        "return !document.querySelector('[data-testid=\"ptt-button\"]').disabled;",
    )
    .await;
}
