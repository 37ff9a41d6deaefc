//! Sessions over real QUIC: authentication, authorisation, replacement,
//! reconnect, presence, hostile control frames, shutdown.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ptt_codec::control::{kind, VERSION};
use ptt_codec::{ClientMsg, CloseCode, ErrorCode, GroupId, ServerMsg, TerminalId};
use ptt_terminal_sim::terminal::{Error, Terminal};
use ptt_tests::eventually::DEADLINE;
use ptt_tests::org::*;
use ptt_tests::{eventually, TestGateway};

fn closed_with(e: &Error) -> Option<CloseCode> {
    match e {
        Error::Closed { code, .. } => *code,
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_rejected() {
    let gw = TestGateway::start(ORG).await;
    // Another terminal's credential.
    let wrong = gw.key.credential(TerminalId(GUARD_A2));
    let e = Terminal::connect(
        &gw.client,
        gw.addr,
        "localhost",
        TerminalId(GUARD_A1),
        &wrong,
    )
    .await
    .unwrap_err();
    assert_eq!(closed_with(&e), Some(CloseCode::AuthFailed), "{e}");
    // Unknown terminal, with a credential that is valid for its id.
    let unknown = TerminalId(424_242);
    let e = Terminal::connect(
        &gw.client,
        gw.addr,
        "localhost",
        unknown,
        &gw.key.credential(unknown),
    )
    .await
    .unwrap_err();
    assert_eq!(closed_with(&e), Some(CloseCode::AuthFailed), "{e}");
    match e {
        Error::Closed { reason, .. } => assert_eq!(reason, "unknown terminal or wrong credential"),
        other => panic!("{other}"),
    }
    assert_eq!(gw.gateway.metrics().auth_failures, 2);
    // The right one works.
    let t = gw.terminal(GUARD_A1).await;
    assert_eq!(t.welcome().name, "张伟");
    assert!(!t.welcome().resumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorised_joins_are_denied_with_stable_codes() {
    let gw = TestGateway::start(ORG).await;
    let mut guard = gw.terminal(GUARD_A1).await;
    let refused = |r: Result<_, Error>| match r {
        Err(Error::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refused(guard.join(UNIT_B).await), ErrorCode::JoinDenied);
    assert_eq!(refused(guard.join(OTHER_UNIT).await), ErrorCode::JoinDenied);
    assert_eq!(
        refused(guard.join(GroupId(777_777)).await),
        ErrorCode::UnknownGroup
    );
    // Own unit: talk; own co-governance station: listen only.
    assert!(guard.join(UNIT_A).await.unwrap().talk);
    assert!(!guard.join(STATION_A).await.unwrap().talk);

    let mut police = gw.terminal(POLICE_PS).await;
    assert!(
        police.join(UNIT_B).await.unwrap().talk,
        "police talk anywhere under their station"
    );
    assert_eq!(
        refused(police.join(OTHER_UNIT).await),
        ErrorCode::JoinDenied
    );

    let mut city = gw.terminal(CITY_CONSOLE).await;
    for g in [UNIT_A, UNIT_B, OTHER_UNIT, STATION_A, CITY] {
        assert!(
            city.join(g).await.unwrap().talk,
            "the city console reaches {g}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_replaces_the_first() {
    let gw = TestGateway::start(ORG).await;
    let mut first = gw.terminal(GUARD_A1).await;
    first.join(UNIT_A).await.unwrap();
    let second = gw.terminal_from_new_port(GUARD_A1).await;
    assert!(
        second.welcome().resumed,
        "the new session takes over the groups"
    );
    let e = first.next_event_within(DEADLINE).await.unwrap_err();
    assert_eq!(closed_with(&e), Some(CloseCode::SessionReplaced), "{e}");
    assert_eq!(gw.gateway.metrics().sessions_replaced, 1);
    assert_eq!(gw.gateway.online(UNIT_A), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_restores_groups_without_rejoining() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    a.join(UNIT_A).await.unwrap();
    a.join(STATION_A).await.unwrap();
    a.close();
    eventually("the closed session to leave its unit", || {
        gw.gateway.online(UNIT_A) == Some(0)
    })
    .await;

    let mut a = gw.terminal_from_new_port(GUARD_A1).await;
    let w = a.welcome();
    assert!(w.resumed);
    let mut groups: Vec<(u32, bool)> = w.groups.iter().map(|m| (m.group.0, m.talk)).collect();
    groups.sort_unstable();
    assert_eq!(groups, vec![(STATION_A.0, false), (UNIT_A.0, true)]);
    assert_eq!(gw.gateway.online(UNIT_A), Some(1));

    // It hears its unit without joining again.
    let mut b = gw.terminal(GUARD_A2).await;
    b.join(UNIT_A).await.unwrap();
    let burst = b.talk(UNIT_A, ptt_codec::Class::Normal).await.unwrap();
    b.send_voice(UNIT_A, burst, 0, &[5], true).unwrap();
    let v = tokio::time::timeout(DEADLINE, a.recv_voice())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.header.speaker, GUARD_A2);

    // After a logout nothing is restored. The gateway forgets the groups
    // before it closes the connection, so the close is the moment to
    // reconnect.
    a.logout().unwrap();
    let closed = loop {
        match a.next_event_within(DEADLINE).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(closed_with(&closed), Some(CloseCode::Normal), "{closed}");
    let again = gw.terminal_from_new_port(GUARD_A1).await;
    assert!(!again.welcome().resumed);
    assert!(again.welcome().groups.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_each_other_come_and_go() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    let joined = a.join(UNIT_A).await.unwrap();
    assert_eq!(joined.online, vec![TerminalId(GUARD_A1)]);
    let mut b = gw.terminal(GUARD_A2).await;
    let joined = b.join(UNIT_A).await.unwrap();
    assert_eq!(joined.online.len(), 2);
    let presence = |online| {
        move |m: &ServerMsg| match m {
            ServerMsg::Presence {
                group,
                terminal,
                online: o,
            } if *group == UNIT_A && terminal.0 == GUARD_A2 && *o == online => Some(Ok(())),
            _ => None,
        }
    };
    a.wait_for(presence(true)).await.unwrap();
    b.close();
    a.wait_for(presence(false)).await.unwrap();
}

/// Opens a raw connection and authenticates by hand, to send bytes the
/// terminal library would never produce.
async fn raw_session(
    gw: &TestGateway,
    id: u32,
) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = gw
        .client
        .connect(gw.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut hello = BytesMut::new();
    ClientMsg::Hello {
        version: VERSION,
        terminal: TerminalId(id),
        credential: Bytes::copy_from_slice(&gw.key.credential(TerminalId(id))),
        media: ptt_codec::MediaOffer::NONE,
    }
    .encode(&mut hello);
    send.write_all(&hello).await.unwrap();
    (conn, send, recv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_frames_get_errors_then_a_close() {
    let gw = TestGateway::start(ORG).await;
    let mut bystander = gw.terminal(GUARD_A2).await;
    bystander.join(UNIT_A).await.unwrap();

    let (conn, mut send, mut recv) = raw_session(&gw, GUARD_A1).await;
    let mut bad = BytesMut::new();
    // Unknown type, truncated join, trailing bytes, group 0, bad class, bad bool-less hello again.
    for (k, body) in [
        (0x3e_u8, &b""[..]),
        (kind::JOIN, &[0, 0, 1][..]),
        (kind::JOIN, &[0, 0, 0, 1, 0][..]),
        (kind::JOIN, &[0, 0, 0, 0][..]),
        (kind::FLOOR_REQUEST, &[0, 0, 0, 1, 9][..]),
    ] {
        bad.put_u8(k);
        bad.put_u16(body.len() as u16);
        bad.put_slice(body);
    }
    send.write_all(&bad).await.unwrap();
    // Welcome, then one MALFORMED error per bad frame, naming its type.
    let mut buf = Vec::new();
    let mut errors = Vec::new();
    while errors.len() < 5 {
        let chunk = tokio::time::timeout(DEADLINE, recv.read_chunk(4096, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk.bytes);
        while let Ok(frame) = ptt_codec::control::split_frame(&buf) {
            let len = frame.len();
            if let ServerMsg::Error { code, frame, .. } = ServerMsg::decode(frame).unwrap() {
                errors.push((code, frame));
            }
            buf.drain(..len);
        }
    }
    assert!(
        errors.iter().all(|(c, _)| *c == ErrorCode::Malformed),
        "{errors:?}"
    );
    assert_eq!(
        errors.iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![0x3e, 2, 2, 2, 4]
    );
    assert_eq!(gw.gateway.metrics().control_malformed, 5);

    // Three more exhaust the tolerance of 8: the connection is closed.
    send.write_all(&bad[..9]).await.unwrap(); // 0x3e and a truncated join = 2 frames
    send.write_all(&bad[..3]).await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code.into_inner(),
                u64::from(CloseCode::ProtocolViolation.code())
            )
        }
        other => panic!("{other}"),
    }
    // Nobody else noticed.
    assert!(bystander.join(UNIT_A).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_missing_hello_closes_the_connection() {
    let gw = TestGateway::start(ORG).await;
    // A header announcing 60 KiB.
    let conn = gw
        .client
        .connect(gw.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[kind::HELLO, 0xf0, 0x00]).await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(c)
        if c.error_code.into_inner() == u64::from(CloseCode::ProtocolViolation.code()))
    );
    // A first frame that is not a Hello.
    let conn = gw
        .client
        .connect(gw.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut join = BytesMut::new();
    ClientMsg::Join { group: UNIT_A }.encode(&mut join);
    send.write_all(&join).await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(c)
        if c.error_code.into_inner() == u64::from(CloseCode::ProtocolViolation.code()))
    );
    // A wrong version.
    let conn = gw
        .client
        .connect(gw.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut hello = BytesMut::new();
    ClientMsg::Hello {
        version: 99,
        terminal: TerminalId(GUARD_A1),
        credential: Bytes::from_static(&[1]),
        media: ptt_codec::MediaOffer::NONE,
    }
    .encode(&mut hello);
    send.write_all(&hello).await.unwrap();
    let reason = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(c)
        if c.error_code.into_inner() == u64::from(CloseCode::UnsupportedVersion.code()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_terminals_why() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    a.join(UNIT_A).await.unwrap();
    gw.stop().await;
    let e = a.next_event_within(DEADLINE).await.unwrap_err();
    assert_eq!(closed_with(&e), Some(CloseCode::ServerShutdown), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_that_reconnects_resumes_its_tls_session() {
    let gw = TestGateway::start(ORG).await;
    // One client configuration per device, as a handset keeps its own
    // tickets across connections.
    let config = ptt_terminal_sim::terminal::client_config(&gw.roots).unwrap();
    let credential = gw.key.credential(TerminalId(GUARD_A1));
    let connect = || {
        Terminal::connect_with_config(
            &gw.client,
            config.clone(),
            gw.addr,
            "localhost",
            TerminalId(GUARD_A1),
            &credential,
            Default::default(),
        )
    };
    let first = connect().await.unwrap();
    assert_eq!(gw.gateway.metrics().tls_tickets_accepted, 0);
    drop(first);
    let _second = connect().await.unwrap();
    let m = gw.gateway.metrics();
    assert_eq!(m.connections_accepted, 2);
    assert_eq!(
        m.tls_tickets_accepted, 1,
        "the second handshake resumed with the first one's ticket"
    );
}

/// A terminal that starts a handshake and goes away does not keep the next
/// terminal out: its handshake slot is given back after
/// `transport.handshake_timeout_ms`, not after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_handshake_gives_its_slot_back() {
    let gw = TestGateway::start_with(ORG, |c| {
        c.transport.max_handshakes = 1;
        c.transport.handshake_timeout_ms = 300;
        // Far longer than the terminal below waits for its session.
        c.transport.idle_timeout_ms = 30_000;
    })
    .await;
    // A real client's Initial packet, caught on a socket that never answers.
    let catcher = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let connecting = gw
        .client
        .connect(catcher.local_addr().unwrap(), "localhost")
        .unwrap();
    let mut initial = vec![0; 2048];
    let len = catcher.recv(&mut initial).await.unwrap();
    drop(connecting);
    // Sent to the gateway from a socket that never answers either: the
    // gateway takes its one slot for a handshake that cannot finish.
    let ghost = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    ghost.send_to(&initial[..len], gw.addr).await.unwrap();
    // The ghost holds the slot (or held it and was already abandoned, on a
    // machine slow enough to miss the 300 ms).
    eventually("the ghost's handshake to take the one slot", || {
        gw.endpoint.open_connections() == 1 || gw.gateway.metrics().handshakes_timed_out == 1
    })
    .await;
    // The terminal waits behind the ghost, whose connection would live
    // until the 30 s idle timeout: a session within 10 s means the slot was
    // given back when the ghost's handshake was abandoned.
    let t = tokio::time::timeout(Duration::from_secs(10), gw.terminal(GUARD_A1))
        .await
        .expect("a terminal gets a session while the ghost's handshake is abandoned");
    assert_eq!(t.id(), TerminalId(GUARD_A1));
    let m = gw.gateway.metrics();
    assert_eq!(m.handshakes_timed_out, 1, "the ghost was abandoned");
    assert_eq!(
        m.connections_accepted, 1,
        "only the terminal's handshake completed"
    );
}
