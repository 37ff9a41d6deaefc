//! The operations surface (issue 12 item 7) against the real gateway
//! process: health without a token, `/metrics` scraped and parsed as
//! Prometheus text and checked against a known run, the API's views, and
//! the operators' actions (disconnect, SOS cancel) end to end, each in the
//! admin audit table.

use std::io::{Read, Write};
use std::time::Duration;

use ptt_codec::{Class, CloseCode, GroupId, ServerMsg, TerminalId};
use ptt_terminal_sim::terminal::Error;
use ptt_tests::eventually::eventually;
use ptt_tests::hostile::GatewayProcess;
use serde_json::Value;

const UNIT: GroupId = GroupId(5);
const TALKER: u32 = 502;
const LISTENER: u32 = 503;
const SOS_PROBE: u32 = 701;
const FRAMES: u16 = 50;

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    l.local_addr().expect("its address").port()
}

/// A blocking HTTP client that answers every status (no error for 4xx).
struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(port: u16, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Client {
            agent,
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    fn call(&self, method: &str, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_empty()
            }
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {path} body: {e}"));
        (status, body)
    }

    /// GET with one more header; the status, the named response header
    /// and the body's bytes.
    fn get_bytes(&self, path: &str, extra: (&str, &str), want: &str) -> (u16, String, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let mut r = self.agent.get(&url).header(extra.0, extra.1);
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = r.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let header = response
            .headers()
            .get(want)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.body_mut().read_to_vec().expect("a body");
        (status, header, body)
    }

    fn json(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, body) = self.call(method, path);
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (status, value)
    }
}

/// The value of the sample `name` with labels `labels` in a scrape.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        })
}

fn scrape(client: &Client) -> prometheus_parse::Scrape {
    let (status, body) = client.call("GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_views_and_operator_actions_over_http() {
    let port = free_tcp_port();
    let gw = GatewayProcess::start(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    let anonymous = Client::new(port, None);
    eventually("the operations surface to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ())
    })
    .await;

    // Health needs no token; everything else does.
    assert_eq!(anonymous.call("GET", "/healthz"), (200, "ok\n".into()));
    assert_eq!(anonymous.call("GET", "/metrics").0, 401);
    assert_eq!(anonymous.call("GET", "/api/v1/status").0, 401);
    let wrong = Client::new(port, Some("f".repeat(64)));
    assert_eq!(wrong.call("GET", "/metrics").0, 401);
    let file = std::fs::read_to_string(gw.data.join("operator.token")).expect("the token file");
    let token = file
        .lines()
        .find_map(|l| l.strip_prefix("admin "))
        .expect("an admin token")
        .to_owned();
    let ops = Client::new(port, Some(token));
    let (status, ready) = ops.json("GET", "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);

    // A known run: one burst of FRAMES frames from the talker to the
    // listener.
    let mut talker = gw.terminal(TALKER).await;
    let mut listener = gw.terminal(LISTENER).await;
    talker.join(UNIT).await.expect("talker joins");
    listener.join(UNIT).await.expect("listener joins");
    // The listener reads while the talker talks, as a handset does.
    let hearing = tokio::spawn(async move {
        let mut heard = 0;
        while heard < FRAMES {
            match tokio::time::timeout(Duration::from_secs(10), listener.recv_voice()).await {
                Ok(Ok(_)) => heard += 1,
                _ => break,
            }
        }
        (listener, heard)
    });
    let burst = talker.talk(UNIT, Class::Normal).await.expect("floor");
    for seq in 0..FRAMES {
        talker
            .send_voice(UNIT, burst, seq, &[0xfc, 0xff, 0xfe], seq + 1 == FRAMES)
            .expect("voice");
        // Opus's 20 ms cadence: under the per-connection voice rate.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut listener, heard) = hearing.await.expect("the listener's task");
    assert_eq!(heard, FRAMES, "{}", ops.call("GET", "/api/v1/status").1);
    talker.release(UNIT).expect("release");

    let m = scrape(&ops);
    assert_eq!(
        sample(&m, "ptt_voice_in_total", &[]),
        Some(f64::from(FRAMES))
    );
    assert_eq!(
        sample(&m, "ptt_voice_delivered_total", &[]),
        Some(f64::from(FRAMES))
    );
    assert_eq!(sample(&m, "ptt_floor_granted_total", &[]), Some(1.0));
    assert_eq!(
        sample(&m, "ptt_sessions_authenticated_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "ptt_sessions", &[("role", "security_guard")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "ptt_sessions", &[("role", "staff")]), Some(1.0));
    assert_eq!(sample(&m, "ptt_accepting", &[]), Some(1.0));
    let (_, text) = ops.call("GET", "/metrics");
    for line in [
        format!("ptt_relay_latency_seconds_count {FRAMES}"),
        format!("ptt_relay_latency_seconds_bucket{{le=\"+Inf\"}} {FRAMES}"),
        "# TYPE ptt_relay_latency_seconds histogram".to_owned(),
        "# UNIT ptt_relay_latency_seconds seconds".to_owned(),
        "# TYPE ptt_store_call_latency_seconds histogram".to_owned(),
        "# TYPE ptt_recorder_queue_depth gauge".to_owned(),
        "# TYPE ptt_disk_free_bytes gauge".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(sample(&m, "ptt_uptime_seconds", &[]).is_some_and(|s| s > 0.0));

    // Views.
    let (_, status) = ops.json("GET", "/api/v1/status");
    assert_eq!(status["sessions"], 2);
    assert_eq!(status["counters"]["voice_in"], FRAMES);
    let (_, terminals) = ops.json("GET", "/api/v1/terminals");
    let ids: Vec<u64> = terminals["terminals"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["id"].as_u64().expect("an id"))
        .collect();
    assert_eq!(ids, [u64::from(TALKER), u64::from(LISTENER)]);
    assert_eq!(terminals["terminals"][1]["role"], "staff");
    assert_eq!(
        terminals["terminals"][1]["groups"],
        serde_json::json!([UNIT.0])
    );
    let (_, groups) = ops.json("GET", "/api/v1/groups");
    let unit = groups["groups"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|g| g["id"] == UNIT.0)
        .expect("the unit's group")
        .clone();
    assert_eq!(unit["online"], 2);
    let bursts = eventually("the burst in the audit log", || {
        let (_, b) = ops.json("GET", &format!("/api/v1/groups/{}/bursts?since=0", UNIT.0));
        match b["bursts"].as_array() {
            Some(list) if !list.is_empty() => Ok(list.clone()),
            _ => Err(b),
        }
    })
    .await;
    assert_eq!(bursts[0]["terminal"], TALKER);
    assert_eq!(bursts[0]["ended_by"], "released");
    assert_eq!(ops.call("GET", "/api/v1/groups/4242/bursts").0, 404);

    // Disconnect: the listener is closed with OPERATOR_DISCONNECT.
    let (status, body) = ops.json("POST", &format!("/api/v1/terminals/{LISTENER}/disconnect"));
    assert_eq!(status, 200, "{body}");
    let closed = loop {
        match listener.next_event_within(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            closed,
            Error::Closed {
                code: Some(CloseCode::OperatorDisconnect),
                ..
            }
        ),
        "{closed:?}"
    );
    let (status, _) = ops.json("POST", &format!("/api/v1/terminals/{LISTENER}/disconnect"));
    assert_eq!(status, 404, "no longer online");

    // SOS cancel: the floor is released and the terminal told.
    let mut probe = gw.terminal(SOS_PROBE).await;
    let alert = probe.sos().await.expect("SOS stored");
    let (status, body) = ops.json("POST", &format!("/api/v1/terminals/{SOS_PROBE}/sos/cancel"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["alert"], alert);
    probe
        .wait_for(|m| matches!(m, ServerMsg::AlertCancelled { alert: a, by } if *a == alert && *by == TerminalId(SOS_PROBE)).then_some(Ok(())))
        .await
        .expect("the SOS terminal is told of the cancel");
    eventually("the hot mic's floor released", || {
        let (_, g) = ops.json("GET", "/api/v1/groups?all=true");
        let unit7 = g["groups"]
            .as_array()
            .and_then(|l| l.iter().find(|g| g["id"] == 7).cloned());
        match unit7 {
            Some(u) if u["holder"].is_null() => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(
        ops.call("POST", &format!("/api/v1/terminals/{SOS_PROBE}/sos/cancel"))
            .0,
        404
    );
    let (_, alerts) = ops.json("GET", "/api/v1/alerts?since=0");
    let sos = &alerts["alerts"][0];
    assert_eq!(sos["id"], alert);
    assert_eq!(sos["kind"], "sos");
    assert_eq!(sos["cancelled"]["by"], 0);

    // The burst's recording: listed, downloaded whole and by range.
    let recording = eventually("the burst's recording indexed", || {
        let (_, r) = ops.json(
            "GET",
            &format!("/api/v1/recordings?group={}&since=0", UNIT.0),
        );
        match r["recordings"].as_array() {
            Some(list) if !list.is_empty() => Ok(list[0].clone()),
            _ => Err(r),
        }
    })
    .await;
    assert_eq!(recording["speaker"], TALKER);
    let audio = recording["audio"]
        .as_str()
        .expect("an audio link")
        .to_owned();
    let (status, kind, whole) = ops.get_bytes(&audio, ("Accept", "*/*"), "content-type");
    assert_eq!((status, kind.as_str()), (200, "audio/ogg"));
    assert!(whole.starts_with(b"OggS"), "an Ogg stream");
    assert_eq!(
        whole.len() as u64,
        recording["bytes"].as_u64().expect("bytes")
    );
    let (status, range, part) = ops.get_bytes(&audio, ("Range", "bytes=4-9"), "content-range");
    assert_eq!(status, 206);
    assert_eq!(range, format!("bytes 4-9/{}", whole.len()));
    assert_eq!(part, whole[4..10]);
    assert_eq!(ops.call("GET", "/api/v1/recordings/999999/audio").0, 404);

    // Revoke: the talker is closed REVOKED at once; unrevoke lets it back.
    let (status, body) = ops.json(
        "POST",
        &format!("/api/v1/terminals/{TALKER}/revoke?reason=stolen"),
    );
    assert_eq!(status, 200, "{body}");
    let closed = loop {
        match talker.next_event_within(Duration::from_secs(10)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(closed, Error::CredentialRevoked { .. }),
        "{closed:?}"
    );
    assert!(
        gw.try_terminal(TALKER).await.is_err(),
        "refused while revoked"
    );
    assert_eq!(
        ops.json("POST", &format!("/api/v1/terminals/{TALKER}/unrevoke"))
            .0,
        200
    );
    gw.terminal(TALKER).await;
    assert_eq!(
        ops.json("POST", &format!("/api/v1/terminals/{TALKER}/unrevoke"))
            .0,
        404
    );
    assert_eq!(ops.json("POST", "/api/v1/terminals/4242/revoke").0, 404);

    // Every action, with its operator.
    let (_, actions) = ops.json("GET", "/api/v1/actions");
    let got: Vec<(String, String, String)> = actions["actions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| {
            assert_eq!(a["operator"], "admin");
            (
                a["action"].as_str().unwrap_or("").to_owned(),
                a["target"].as_str().unwrap_or("").to_owned(),
                a["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expect = |a: &str, t: String, o: String| (a.to_owned(), t, o);
    assert_eq!(
        got,
        [
            expect(
                "unrevoke",
                format!("terminal {TALKER}"),
                "was not revoked".into()
            ),
            expect("unrevoke", format!("terminal {TALKER}"), "lifted".into()),
            expect(
                "revoke",
                format!("terminal {TALKER}: stolen"),
                "revoked".into()
            ),
            expect(
                "cancel-sos",
                format!("terminal {SOS_PROBE}"),
                "no active SOS".into()
            ),
            expect(
                "cancel-sos",
                format!("terminal {SOS_PROBE}"),
                format!("cancelled alert {alert}")
            ),
            expect(
                "disconnect",
                format!("terminal {LISTENER}"),
                "not online".into()
            ),
            expect("disconnect", format!("terminal {LISTENER}"), "done".into()),
        ]
    );
    assert_eq!(anonymous.call("GET", "/nowhere").0, 404);
}

/// Bound beyond loopback, the surface speaks HTTPS with the gateway's
/// certificate (and plain HTTP gets nothing). Bound on 0.0.0.0, reached over
/// 127.0.0.1: the traffic stays on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_surface_is_https_with_the_gateway_certificate() {
    let port = free_tcp_port();
    let gw = GatewayProcess::start(&format!("[http]\nlisten = \"0.0.0.0:{port}\"\n")).await;
    eventually("the operations surface to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(|_| ())
    })
    .await;
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(gw.roots.clone())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("TCP");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let mut stream = connector.connect(name, tcp).await.expect("a TLS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).expect("TCP");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    drop(gw);
}

/// `--log-format json`: one JSON object per line, and one line per session
/// start and end naming the terminal, its address, and (at the end) how long
/// it lasted and why it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_session_start_and_end() {
    let gw = GatewayProcess::start_with_args("", &["--log-format", "json"]).await;
    let t = gw.terminal(TALKER).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.logout().expect("logout");
    drop(t);
    eventually("the session's end in the log", || {
        if gw.log_text().contains("session ended") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let lines: Vec<Value> = gw
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
            .clone()
    };
    let started = find("session started");
    assert_eq!(started["span"]["terminal"], format!("T{TALKER}"));
    assert!(started["span"]["remote"]
        .as_str()
        .is_some_and(|r| r.starts_with("127.0.0.1:")));
    let ended = find("session ended");
    assert_eq!(ended["span"]["terminal"], format!("T{TALKER}"));
    assert!(
        ended["fields"]["duration_ms"]
            .as_u64()
            .is_some_and(|d| d >= 200),
        "{ended}"
    );
    assert!(ended["fields"]["cause"].is_string(), "{ended}");
}
