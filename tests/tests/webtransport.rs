//! The browser console's transport (issue 13): WebTransport sessions on
//! the gateway's QUIC port, carrying the same protocol as a handset, with
//! every rule applied unchanged; and what the handshake does with hostile
//! input. A WebTransport client built on quinn stands in for the browser
//! here (tests/tests/console.rs drives Chromium itself).

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use ptt_codec::{Class, ClientMsg, CloseCode, ServerMsg, TerminalId, VoiceHeader};
use ptt_gateway::alert::Store;
use ptt_gateway::store::ConsoleSession;
use ptt_tests::org::*;
use ptt_tests::webtransport::{endpoint, OpenError, WebSession};
use ptt_tests::{eventually, TestGateway};
use sha2::Digest;

/// The token of the station console's session (its SHA-256 is stored).
const TOKEN: [u8; 32] = [7; 32];
/// A token signed in at the city console.
const CITY_TOKEN: [u8; 32] = [9; 32];

/// Stores the console sessions the tests sign in with.
fn sessions(store: &Store) {
    for (token, terminal) in [(TOKEN, CONSOLE_PS), (CITY_TOKEN, CITY_CONSOLE)] {
        store
            .put_console_session(&ConsoleSession {
                token_hash: sha2::Sha256::digest(token).into(),
                operator: format!("op{terminal}"),
                terminal: TerminalId(terminal),
                created_ms: 0,
                expires_ms: u64::MAX / 2,
            })
            .expect("a console session stored");
    }
}

async fn gateway() -> TestGateway {
    TestGateway::start_with_store(ORG, |_| {}, sessions).await
}

fn session_endpoint(gw: &TestGateway) -> quinn::Endpoint {
    let hashes = gw.gateway.console_cert_hashes();
    assert!(!hashes.is_empty(), "a self-signed console certificate");
    endpoint(hashes)
}

fn voice(group: ptt_codec::GroupId, burst: u16, seq: u16, opus: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    VoiceHeader {
        group,
        speaker: 0,
        burst,
        seq,
        flags: 0,
    }
    .encode(opus, &mut buf);
    buf.to_vec()
}

#[tokio::test]
async fn a_console_over_webtransport_hears_and_talks_like_a_handset() {
    let gw = gateway().await;
    let client = session_endpoint(&gw);
    let session = WebSession::open(&client, gw.addr, "/console")
        .await
        .expect("a WebTransport session");
    let mut console = session
        .hello(TerminalId(CONSOLE_PS), &TOKEN)
        .await
        .expect("control stream");
    let welcome = console.next().await.expect("an answer");
    assert!(
        matches!(welcome, ServerMsg::Welcome { terminal, .. } if terminal == TerminalId(CONSOLE_PS)),
        "{welcome:?}"
    );
    console.send(ClientMsg::Join { group: UNIT_A }).await;
    console
        .wait_for(|m| matches!(m, ServerMsg::Joined { group, .. } if group == UNIT_A).then_some(()))
        .await;

    // A guard talks: the console gets FloorTaken and every frame.
    let mut guard = gw.terminal(GUARD_A1).await;
    guard.join(UNIT_A).await.expect("joined");
    let burst = guard.talk(UNIT_A, Class::Normal).await.expect("granted");
    console
        .wait_for(|m| {
            matches!(m, ServerMsg::FloorTaken { speaker, .. } if speaker == TerminalId(GUARD_A1))
                .then_some(())
        })
        .await;
    for seq in 0..5u16 {
        guard
            .send_voice(UNIT_A, burst, seq, &[0xf8, 0xff, seq as u8], false)
            .expect("sent");
        let datagram = console.read_datagram().await;
        let (header, opus) = VoiceHeader::decode(&datagram).expect("a voice datagram");
        assert_eq!(
            (header.speaker, header.seq, opus),
            (GUARD_A1, seq, &[0xf8, 0xff, seq as u8][..])
        );
    }
    guard.release(UNIT_A).expect("released");

    // The console talks: the guard gets its frames, speaker filled in.
    console
        .wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(()))
        .await;
    console
        .send(ClientMsg::FloorRequest {
            group: UNIT_A,
            class: Class::Normal,
        })
        .await;
    let burst = console
        .wait_for(|m| match m {
            ServerMsg::FloorGranted { burst, .. } => Some(burst),
            _ => None,
        })
        .await;
    for seq in 0..5u16 {
        console.send_datagram(&voice(UNIT_A, burst, seq, &[0xf8, 0xfe, seq as u8]));
        let got = tokio::time::timeout(Duration::from_secs(5), guard.recv_voice())
            .await
            .expect("voice within 5 s")
            .expect("voice");
        assert_eq!((got.header.speaker, got.header.seq), (CONSOLE_PS, seq));
    }
    // The rules hold unchanged: a frame of a burst not granted is dropped.
    let dropped = gw.gateway.metrics().voice_not_holder;
    console.send_datagram(&voice(UNIT_A, burst.wrapping_add(1), 9, &[0xf8]));
    eventually("the stray frame is dropped", || {
        gw.gateway.metrics().voice_not_holder > dropped
    })
    .await;
    assert_eq!(gw.gateway.metrics().webtransport_refused, 0);
    assert_eq!(gw.gateway.metrics().webtransport_sessions, 1);
}

#[tokio::test]
async fn an_operator_commands_only_their_subtree() {
    let gw = gateway().await;
    let client = session_endpoint(&gw);
    let session = WebSession::open(&client, gw.addr, "/console")
        .await
        .expect("session");
    let mut console = session
        .hello(TerminalId(CONSOLE_PS), &TOKEN)
        .await
        .expect("hello");
    console.next().await.expect("welcome");
    console.send(ClientMsg::Join { group: OTHER_UNIT }).await;
    let refused = console
        .wait_for(|m| match m {
            ServerMsg::Error { code, .. } => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(refused, ptt_codec::ErrorCode::JoinDenied);
}

/// The close code a session's connection ended with, once it ended.
async fn closed_with(conn: &quinn::Connection) -> quinn::ConnectionError {
    tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("closed within 5 s")
}

#[tokio::test]
async fn a_hello_without_the_session_token_is_refused() {
    let gw = gateway().await;
    let client = session_endpoint(&gw);
    // Someone else's token, a made-up one, and a handset's provisioned
    // credential (good natively, not over WebTransport).
    let provisioned = gw.key.credential(TerminalId(CONSOLE_PS));
    for (terminal, token) in [
        (CONSOLE_PS, &CITY_TOKEN[..]),
        (CONSOLE_PS, &[1u8; 32][..]),
        (CONSOLE_PS, &provisioned[..]),
        (GUARD_A1, &TOKEN[..]),
    ] {
        let session = WebSession::open(&client, gw.addr, "/console")
            .await
            .expect("session");
        let conn = session.conn.clone();
        let mut console = session
            .hello(TerminalId(terminal), token)
            .await
            .expect("hello");
        assert!(console.next().await.is_none(), "no Welcome");
        let e = closed_with(&conn).await;
        // Closed with the session's capsule (AUTH_FAILED) and then the
        // connection (H3_NO_ERROR).
        assert!(
            matches!(e, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == quinn::VarInt::from_u32(0x100)),
            "{e:?}"
        );
    }
    assert!(gw.gateway.metrics().auth_failures >= 4);
}

#[tokio::test]
async fn a_connect_elsewhere_is_answered_404() {
    let gw = gateway().await;
    let client = session_endpoint(&gw);
    match WebSession::open(&client, gw.addr, "/admin").await {
        Err(OpenError::Status(404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    eventually("the refusal is counted", || {
        gw.gateway.metrics().webtransport_refused == 1
    })
    .await;
}

/// Opens an HTTP/3 connection and sends `control` as the client's first
/// unidirectional stream; returns how the connection ended.
async fn hostile_settings(gw: &TestGateway, control: &[u8]) -> quinn::ConnectionError {
    let client = session_endpoint(gw);
    let conn = client
        .connect(gw.addr, "localhost")
        .expect("attempt")
        .await
        .expect("QUIC handshake");
    let mut uni = conn.open_uni().await.expect("a stream");
    // The gateway may close before it has read everything.
    let _ = uni.write_all(control).await;
    closed_with(&conn).await
}

#[tokio::test]
async fn hostile_handshakes_are_closed_and_counted() {
    // Unknown streams are ignored, as HTTP/3 requires, until the Hello's
    // time is up.
    let gw =
        TestGateway::start_with_store(ORG, |c| c.session.hello_timeout_ms = 1000, sessions).await;
    // SETTINGS without WebTransport.
    let mut plain = BytesMut::new();
    web_transport_proto::Settings::default().encode(&mut plain);
    // A control stream of the wrong frame type.
    let wrong_frame = [0x00, 0x01, 0x01, 0x00];
    // A SETTINGS frame announcing more than the gateway reads.
    let mut huge = BytesMut::new();
    huge.put_u8(0x00); // control stream
    huge.put_u8(0x04); // SETTINGS
    huge.put_slice(&[0x80, 0x01, 0x00, 0x00]); // 65,536 bytes follow
    huge.put_slice(&vec![0x21; 16 * 1024]);
    // Garbage.
    let garbage = [0xff; 64];
    for (what, bytes) in [
        ("SETTINGS without WebTransport", &plain[..]),
        ("wrong frame", &wrong_frame[..]),
        ("oversized SETTINGS", &huge[..]),
        ("garbage", &garbage[..]),
    ] {
        let e = hostile_settings(&gw, bytes).await;
        assert!(
            matches!(e, quinn::ConnectionError::ApplicationClosed(_)),
            "{what}: {e:?}"
        );
    }
    eventually("the refusals are counted", || {
        gw.gateway.metrics().webtransport_refused >= 3
    })
    .await;
    // And a legit console still gets in.
    let client = session_endpoint(&gw);
    let session = WebSession::open(&client, gw.addr, "/console")
        .await
        .expect("session");
    let mut console = session
        .hello(TerminalId(CONSOLE_PS), &TOKEN)
        .await
        .expect("hello");
    assert!(matches!(
        console.next().await,
        Some(ServerMsg::Welcome { .. })
    ));
}

#[tokio::test]
async fn a_silent_browser_is_closed_when_its_hello_is_due() {
    let gw =
        TestGateway::start_with_store(ORG, |c| c.session.hello_timeout_ms = 500, sessions).await;
    let client = session_endpoint(&gw);
    let conn = client
        .connect(gw.addr, "localhost")
        .expect("attempt")
        .await
        .expect("QUIC handshake");
    let e = closed_with(&conn).await;
    assert!(
        matches!(e, quinn::ConnectionError::ApplicationClosed(ref c) if c.error_code == quinn::VarInt::from_u32(CloseCode::HelloTimeout.code())),
        "{e:?}"
    );
}

#[tokio::test]
async fn native_terminals_are_unaffected_by_the_console_alpn() {
    let gw = gateway().await;
    let mut guard = gw.terminal(GUARD_A1).await;
    guard.join(UNIT_A).await.expect("joined");
    // The native certificate is the pinned cert.pem, not the console's.
    let hashes = gw.gateway.console_cert_hashes();
    let native: [u8; 32] = sha2::Sha256::digest(
        guard
            .connection()
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .expect("the gateway's certificate")[0]
            .as_ref(),
    )
    .into();
    assert!(
        !hashes.contains(&native),
        "each ALPN has its own certificate"
    );
}

/// Opens a unidirectional stream on `console`'s session with the
/// WebTransport header of session `id` and writes `bytes` after it.
async fn uni_stream(console: &ptt_tests::webtransport::WebConsole, id: u64, bytes: &[u8]) {
    let mut send = console.session.conn.open_uni().await.expect("a stream");
    let mut header = BytesMut::new();
    web_transport_proto::StreamUni::WEBTRANSPORT.encode(&mut header);
    web_transport_proto::VarInt::from_u64(id)
        .expect("a varint")
        .encode(&mut header);
    header.extend_from_slice(bytes);
    send.write_all(&header).await.expect("written");
    send.finish().expect("finished");
}

#[tokio::test]
async fn photos_go_up_and_alerts_come_down_on_webtransport_streams() {
    use ptt_codec::{AlertBody, AlertKind, AttachmentRef, Target};
    let gw = gateway().await;
    let client = session_endpoint(&gw);
    let session = WebSession::open(&client, gw.addr, "/console")
        .await
        .expect("session");
    let id = session.id.into_inner();
    let mut console = session
        .hello(TerminalId(CONSOLE_PS), &TOKEN)
        .await
        .expect("hello");
    console.next().await.expect("welcome");

    // A stream naming another session is not an upload: ignored.
    let mut put = BytesMut::new();
    ClientMsg::AttachmentPut {
        request: 1,
        mime: "image/jpeg".into(),
        size: 4,
    }
    .encode(&mut put);
    put.extend_from_slice(b"\xff\xd8\xff\xd9");
    uni_stream(&console, id + 4, &put).await;
    // This session's: stored.
    let mut put = BytesMut::new();
    ClientMsg::AttachmentPut {
        request: 2,
        mime: "image/jpeg".into(),
        size: 4,
    }
    .encode(&mut put);
    put.extend_from_slice(b"\xff\xd8\xff\xd9");
    uni_stream(&console, id, &put).await;
    let (request, attachment) = console
        .wait_for(|m| match m {
            ServerMsg::AttachmentStored {
                request,
                attachment,
                ..
            } => Some((request, attachment)),
            _ => None,
        })
        .await;
    assert_eq!(request, 2, "only the upload on this session's stream");

    // A dispatch with the photo reaches a guard; his receipt reaches the
    // console's control stream.
    let mut guard = gw.terminal(GUARD_A1).await;
    console
        .send(ClientMsg::AlertSend {
            request: 3,
            body: AlertBody {
                kind: AlertKind::Dispatch,
                priority: 3,
                ttl_s: 600,
                title: "拉车门".into(),
                text: "城南路165号".into(),
                location: None,
                attachments: vec![AttachmentRef {
                    id: attachment,
                    size: 0,
                    mime: String::new(),
                }],
            },
            target: Target::Terminals(vec![TerminalId(GUARD_A1)]),
        })
        .await;
    let alert = console
        .wait_for(|m| match m {
            ServerMsg::AlertAccepted { alert, .. } => Some(alert),
            _ => None,
        })
        .await;
    let got = tokio::time::timeout(Duration::from_secs(5), guard.next_alert())
        .await
        .expect("the alert within 5 s")
        .expect("the alert");
    assert_eq!((got.alert, got.body.attachments[0].size), (alert, 4));
    guard
        .receipt(alert, ptt_codec::ReceiptStatus::Accepted, "")
        .await
        .expect("receipt stored");
    console
        .wait_for(|m| {
            matches!(m, ServerMsg::ReceiptUpdate { alert: a, status: ptt_codec::ReceiptStatus::Accepted, .. } if a == alert)
                .then_some(())
        })
        .await;

    // An SOS from the guard comes down to the console on a stream of its
    // own (the console reads it like the browser does).
    guard.sos().await.expect("SOS stored");
    // The gateway's HTTP/3 control stream (type 0, never finished) came
    // first: keep it open, take the next.
    let mut held = Vec::new();
    let bytes = loop {
        let mut recv =
            tokio::time::timeout(Duration::from_secs(5), console.session.conn.accept_uni())
                .await
                .expect("a stream within 5 s")
                .expect("a stream");
        let mut first = [0u8; 1];
        recv.read_exact(&mut first).await.expect("a stream type");
        if first[0] == 0x00 {
            held.push(recv);
            continue;
        }
        let mut bytes = first.to_vec();
        bytes.extend(recv.read_to_end(64 * 1024).await.expect("the alert stream"));
        break bytes;
    };
    let mut header = &bytes[..];
    let kind = web_transport_proto::VarInt::decode(&mut header).expect("a type");
    let session = web_transport_proto::VarInt::decode(&mut header).expect("a session id");
    assert_eq!((kind.into_inner(), session.into_inner()), (0x54, id));
    let frame = ptt_codec::control::split_frame(header).expect("one frame");
    match ServerMsg::decode(frame).expect("an Alert") {
        ServerMsg::Alert { body, issuer, .. } => {
            assert_eq!((body.kind, issuer), (AlertKind::Sos, TerminalId(GUARD_A1)))
        }
        other => panic!("expected the SOS alert, got {other:?}"),
    }
}

/// The client library's WebTransport (`ptt_terminal::web`, what load tools
/// use): a console connected with `Terminal::connect_web` hears, talks,
/// uploads and receives alerts exactly as a native terminal, the session's
/// stream and datagram headers written and stripped by the library.
#[tokio::test]
async fn the_client_library_speaks_the_protocol_over_webtransport() {
    use ptt_codec::{AlertBody, AlertKind, Target};
    use ptt_terminal_sim::terminal::{SeenAlerts, Terminal};

    let gw = gateway().await;
    let client = endpoint(gw.gateway.console_cert_hashes());
    let mut console = Terminal::connect_web(
        &client,
        gw.addr,
        TerminalId(CONSOLE_PS),
        &TOKEN,
        SeenAlerts::default(),
    )
    .await
    .expect("welcomed over WebTransport");
    assert_eq!(console.welcome().terminal, TerminalId(CONSOLE_PS));
    console.join(UNIT_A).await.expect("joined");

    // Voice from a handset arrives, the session prefix removed.
    let mut guard = gw.terminal(GUARD_A1).await;
    guard.join(UNIT_A).await.expect("joined");
    let burst = guard.talk(UNIT_A, Class::Normal).await.expect("granted");
    for seq in 0..3u16 {
        guard
            .send_voice(UNIT_A, burst, seq, &[0xf8, seq as u8], seq == 2)
            .expect("sent");
        let voice = tokio::time::timeout(Duration::from_secs(5), console.recv_voice())
            .await
            .expect("a frame within 5 s")
            .expect("connection open");
        assert_eq!(
            (voice.header.speaker, voice.header.seq, voice.opus()),
            (GUARD_A1, seq, &[0xf8, seq as u8][..])
        );
    }
    guard.release(UNIT_A).expect("released");

    // An upload (a unidirectional stream of the session) and an alert
    // carrying it.
    let photo = bytes::Bytes::from_static(b"\xff\xd8 a photo \xff\xd9");
    let attachment = console
        .upload_attachment("image/jpeg", photo.clone())
        .await
        .expect("stored");
    let body = AlertBody {
        kind: AlertKind::Dispatch,
        priority: 3,
        ttl_s: 600,
        title: "from the browser".into(),
        text: String::new(),
        location: None,
        attachments: vec![ptt_codec::AttachmentRef {
            id: attachment,
            size: 0,
            mime: String::new(),
        }],
    };
    console
        .send_alert(Target::Terminals(vec![TerminalId(GUARD_A1)]), body.clone())
        .await
        .expect("sent");
    let got = guard.next_alert().await.expect("an alert");
    assert_eq!(got.body.title, "from the browser");
    assert_eq!(
        got.body.attachments.first().map(|a| (a.id, a.size)),
        Some((attachment, photo.len() as u32)),
        "the upload arrived whole"
    );

    // An alert to the console comes on a stream the gateway opens in the
    // session (its HTTP/3 control stream is not mistaken for one).
    let mut city = gw.terminal(CITY_CONSOLE).await;
    let (alert, _) = city
        .send_alert(
            Target::Terminals(vec![TerminalId(CONSOLE_PS)]),
            AlertBody {
                title: "to the browser".into(),
                attachments: Vec::new(),
                ..body
            },
        )
        .await
        .expect("sent");
    let got = console.next_alert().await.expect("an alert");
    assert_eq!(
        (got.alert, got.body.title.as_str()),
        (alert, "to the browser")
    );

    // The console talks; the guard hears it, speaker stamped.
    let burst = console.talk(UNIT_A, Class::Normal).await.expect("granted");
    console
        .send_voice(UNIT_A, burst, 0, &[0xf8, 0xaa], true)
        .expect("sent");
    let voice = tokio::time::timeout(Duration::from_secs(5), guard.recv_voice())
        .await
        .expect("a frame within 5 s")
        .expect("connection open");
    assert_eq!(
        (voice.header.speaker, voice.opus()),
        (CONSOLE_PS, &[0xf8, 0xaa][..])
    );
    console.release(UNIT_A).expect("released");
}
