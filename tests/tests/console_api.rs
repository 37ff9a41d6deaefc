//! The browser console's HTTP side (issue 13) against the real gateway
//! process: operator accounts made with `ptt-gateway operator`, sign-in
//! (argon2id, bounded attempts), the session's WebTransport address and
//! certificate hashes, the subtree an operator sees, sign-out closing the
//! console's WebTransport session with SIGNED_OUT.

use std::process::Command;
use std::time::Duration;

use ptt_codec::{CloseCode, ServerMsg, TerminalId};
use ptt_tests::bin;
use ptt_tests::eventually::eventually;
use ptt_tests::hostile::GatewayProcess;
use ptt_tests::webtransport::{endpoint, WebSession};
use serde_json::{json, Value};

/// The station console of the test org (node 3).
const STATION_CONSOLE: u32 = 300;
/// The city console (node 1).
const CITY_CONSOLE: u32 = 100;

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    l.local_addr().expect("its address").port()
}

/// `ptt-gateway operator <args>` on the gateway's data directory, with
/// `password` on stdin; its output, or its error output on failure.
fn operator(gw: &GatewayProcess, args: &[&str], password: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(bin("ptt-gateway"))
        .arg("operator")
        .args(args)
        .arg("--data-dir")
        .arg(&gw.data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ptt-gateway operator");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password written");
    let out = child.wait_with_output().expect("finished");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn signin(&self, name: &str, password: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .post(format!("{}/console/api/signin", self.base))
            .header("Content-Type", "application/json")
            .send(json!({ "name": name, "password": password }).to_string())
            .expect("an answer");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().expect("a body");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .expect("an answer");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().expect("a body");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn signout(&self, token: &str) -> u16 {
        self.agent
            .post(format!("{}/console/api/signout", self.base))
            .header("Authorization", format!("Bearer {token}"))
            .send_empty()
            .expect("an answer")
            .status()
            .as_u16()
    }
}

async fn start(extra: &str) -> (GatewayProcess, Http) {
    let port = free_tcp_port();
    let gw =
        GatewayProcess::start(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{extra}")).await;
    eventually("the HTTP surface to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ())
    })
    .await;
    (gw, Http::new(port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_see_their_subtree_and_sign_out() {
    let (gw, http) = start("").await;
    operator(
        &gw,
        &["add", "wang", "--terminal", "300", "--password-stdin"],
        "城东 night shift",
    )
    .expect("an operator");
    operator(
        &gw,
        &["add", "chen", "--terminal", "100", "--password-stdin"],
        "city desk 2026",
    )
    .expect("another");
    // Only consoles of the org; passwords of at least 8 characters.
    let args = [
        "add",
        "li",
        "--terminal",
        "501",
        "--password-stdin",
        "--org",
    ];
    let org = gw
        .data
        .parent()
        .expect("the test directory")
        .join("city.toml");
    let mut with_org: Vec<&str> = args.to_vec();
    let org_arg = org.to_string_lossy().into_owned();
    with_org.push(&org_arg);
    let refused =
        operator(&gw, &with_org, "long enough").expect_err("a guard's handset is no console");
    assert!(refused.contains("not a console"), "{refused}");
    let short = operator(
        &gw,
        &["add", "li", "--terminal", "300", "--password-stdin"],
        "short",
    )
    .expect_err("too short");
    assert!(short.contains("at least 8"), "{short}");

    assert_eq!(http.signin("wang", "wrong password").0, 401);
    assert_eq!(http.signin("nobody", "城东 night shift").0, 401);
    let (status, session) = http.signin("wang", "城东 night shift");
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["terminal"], STATION_CONSOLE);
    assert_eq!(session["node"], 3);
    let token = session["token"].as_str().expect("a token").to_owned();
    assert_eq!(token.len(), 64);
    let url = session["webtransport"]["url"].as_str().expect("a URL");
    assert_eq!(url, format!("https://127.0.0.1:{}/console", gw.addr.port()));
    let hashes: Vec<[u8; 32]> = session["webtransport"]["cert_hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| hex_to_32(h.as_str().expect("hex")))
        .collect();
    assert_eq!(hashes.len(), 1, "{session}");

    // The station operator sees node 3 and under, nothing else.
    let (status, tree) = http.get("/console/api/tree", &token);
    assert_eq!(status, 200, "{tree}");
    let nodes: Vec<u64> = tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert!(nodes.contains(&3) && nodes.contains(&5), "{nodes:?}");
    assert!(!nodes.contains(&1) && !nodes.contains(&11), "{nodes:?}");
    let terminals: Vec<u64> = tree["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert!(
        terminals.contains(&501) && !terminals.contains(&100),
        "{terminals:?}"
    );
    // Another station's group and history are not his.
    assert_eq!(http.get("/console/api/groups/11/bursts", &token).0, 403);
    assert_eq!(http.get("/console/api/groups/5/bursts", &token).0, 200);
    // The city operator sees the whole city.
    let (_, city) = http.signin("chen", "city desk 2026");
    let (_, tree) = http.get("/console/api/tree", city["token"].as_str().unwrap());
    assert!(tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == 11));
    assert_eq!(city["terminal"], CITY_CONSOLE);

    // Presence: a guard online shows as online.
    let _guard = gw.terminal(501).await;
    let (_, tree) = http.get("/console/api/tree", &token);
    let guard = tree["terminals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == 501)
        .cloned()
        .unwrap();
    assert_eq!(guard["online"], true, "{guard}");

    // The console's WebTransport session, signed in with the token.
    let client = endpoint(hashes);
    let web = WebSession::open(&client, gw.addr, "/console")
        .await
        .expect("a session");
    let conn = web.conn.clone();
    let mut console = web
        .hello(TerminalId(STATION_CONSOLE), &hex::decode(&token).unwrap())
        .await
        .expect("hello");
    assert!(matches!(
        console.next().await,
        Some(ServerMsg::Welcome { .. })
    ));

    // Signing out ends the session: the API refuses the token, and the
    // WebTransport session gets SIGNED_OUT in its close capsule.
    assert_eq!(http.signout(&token), 204);
    assert_eq!(http.get("/console/api/tree", &token).0, 401);
    let capsule = console.session_close_capsule().await;
    assert_eq!(capsule, Some(CloseCode::SignedOut.code()));
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("closed");

    // A removed operator cannot sign in.
    operator(&gw, &["remove", "chen"], "").expect("removed");
    assert_eq!(http.signin("chen", "city desk 2026").0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_bounded_per_name() {
    let (gw, http) = start("[console]\nmax_failures = 3\n").await;
    operator(
        &gw,
        &["add", "wang", "--terminal", "300", "--password-stdin"],
        "right password",
    )
    .expect("an operator");
    operator(
        &gw,
        &["add", "zhao", "--terminal", "300", "--password-stdin"],
        "zhao password",
    )
    .expect("an operator");
    for _ in 0..3 {
        assert_eq!(http.signin("wang", "guess").0, 401);
    }
    // Refused unchecked now, even with the right password, and counted.
    assert_eq!(http.signin("wang", "right password").0, 429);
    // The address is throttled too: all of these came from 127.0.0.1.
    assert_eq!(http.signin("zhao", "zhao password").0, 429);
    let body = gw.log_text();
    assert!(
        body.contains("console sign-in failed"),
        "failures are logged"
    );
}

fn hex_to_32(h: &str) -> [u8; 32] {
    hex::decode(h).expect("hex").try_into().expect("32 bytes")
}
