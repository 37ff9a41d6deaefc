//! Voice fan-out over real QUIC: who hears what.

use std::time::Duration;

use bytes::Bytes;
use ptt_codec::{Class, GroupId, ServerMsg, VoiceHeader};
use ptt_terminal_sim::terminal::Terminal;
use ptt_tests::eventually::DEADLINE;
use ptt_tests::org::*;
use ptt_tests::{eventually, TestGateway};

/// Receives voice until `quiet` passes without any; returns what came.
/// For checking that nothing (more) arrives; to wait for frames that
/// should, use [`frames`].
async fn drain_voice(t: &Terminal, quiet: Duration) -> Vec<VoiceHeader> {
    let mut got = Vec::new();
    while let Ok(Ok(v)) = tokio::time::timeout(quiet, t.recv_voice()).await {
        got.push(v.header);
    }
    got
}

/// Receives `n` voice frames, waiting up to [`DEADLINE`] for each.
async fn frames(t: &Terminal, n: usize) -> Vec<VoiceHeader> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(DEADLINE, t.recv_voice()).await {
            Ok(Ok(v)) => got.push(v.header),
            Ok(Err(e)) => panic!("terminal {} after {} of {n} frames: {e}", t.id(), got.len()),
            Err(_) => panic!(
                "terminal {} heard {} of {n} frames within {DEADLINE:?}",
                t.id(),
                got.len()
            ),
        }
    }
    got
}

async fn taken(t: &mut Terminal, group: GroupId) -> u32 {
    t.wait_for(|m| match m {
        ServerMsg::FloorTaken {
            group: g, speaker, ..
        } if *g == group => Some(Ok(speaker.0)),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_members_and_monitoring_consoles_only() {
    let gw = TestGateway::start(ORG).await;
    // QUIC DATAGRAM voice is what this test is about (the library offers SRTP).
    ptt_terminal_sim::terminal::set_media_offer(&gw.client, false);
    let mut talker = gw.terminal(GUARD_A1).await;
    let mut mate = gw.terminal(GUARD_A2).await;
    let mut staff = gw.terminal(STAFF_A3).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut other_unit = gw.terminal(GUARD_B1).await;
    let mut idle_console = gw.terminal(CITY_CONSOLE).await;
    for t in [&mut talker, &mut mate, &mut staff] {
        t.join(UNIT_A).await.unwrap();
    }
    console.join(UNIT_A).await.unwrap();
    console.join(UNIT_B).await.unwrap();
    other_unit.join(UNIT_B).await.unwrap();
    idle_console.join(CITY).await.unwrap();

    let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
    for t in [&mut mate, &mut staff, &mut console] {
        assert_eq!(taken(t, UNIT_A).await, GUARD_A1);
    }
    for seq in 0..20u16 {
        talker
            .send_voice(UNIT_A, burst, seq, &[0xf8, 0xff, 0xfe], seq == 19)
            .unwrap();
        // Paced as a terminal sends (every 20 ms, here faster): the
        // scenario, not a wait for the gateway.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let quiet = Duration::from_millis(500);
    for t in [&mate, &staff, &console] {
        let got = frames(t, 20).await;
        let seqs: Vec<u16> = got.iter().map(|h| h.seq).collect();
        assert_eq!(
            seqs,
            (0..20).collect::<Vec<_>>(),
            "terminal {} heard every frame in order",
            t.id()
        );
        assert!(got
            .iter()
            .all(|h| h.group == UNIT_A && h.speaker == GUARD_A1 && h.burst == burst));
    }
    for t in [&mate, &staff, &console] {
        assert!(
            drain_voice(t, quiet).await.is_empty(),
            "terminal {} heard every frame once",
            t.id()
        );
    }
    assert!(
        drain_voice(&talker, quiet).await.is_empty(),
        "the talker does not hear itself"
    );
    assert!(
        drain_voice(&other_unit, quiet).await.is_empty(),
        "another unit hears nothing"
    );
    assert!(
        drain_voice(&idle_console, quiet).await.is_empty(),
        "a console not monitoring hears nothing"
    );
    let m = gw.gateway.metrics();
    assert_eq!(m.voice_delivered, 60);
    assert_eq!(m.voice_not_holder, 0);
    // Every frame's relay is timed to queued; the first of every 64 also to
    // its packets handed to the socket.
    assert_eq!(gw.gateway.relay_latency().count, 20);
    assert_eq!(gw.gateway.socket_latency().count, 1);
    // Sessions that end count the DATAGRAM frames their connection really
    // sent: every frame handed over went out (none dropped for lateness).
    for t in [&mate, &staff, &console] {
        t.close();
    }
    eventually(
        "the three receivers' sessions to end and report 60 datagrams sent",
        || gw.gateway.metrics().voice_datagrams_sent >= 60,
    )
    .await;
    assert_eq!(gw.gateway.metrics().voice_datagrams_sent, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_from_a_non_holder_is_dropped_and_counted() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    let mut b = gw.terminal(GUARD_A2).await;
    a.join(UNIT_A).await.unwrap();
    b.join(UNIT_A).await.unwrap();
    // Nobody holds the floor: dropped.
    b.send_voice(UNIT_A, 1, 0, &[1, 2, 3], false).unwrap();
    // a holds it; b sends with a's burst id anyway: dropped.
    let burst = a.talk(UNIT_A, Class::Normal).await.unwrap();
    b.send_voice(UNIT_A, burst, 1, &[1, 2, 3], false).unwrap();
    // a sends with a stale burst id: dropped.
    a.send_voice(UNIT_A, burst.wrapping_add(7), 2, &[1, 2, 3], false)
        .unwrap();
    assert!(drain_voice(&a, Duration::from_millis(300)).await.is_empty());
    assert!(drain_voice(&b, Duration::from_millis(300)).await.is_empty());
    let m = eventually("three datagrams counted as not from the holder", || {
        let m = gw.gateway.metrics();
        (m.voice_not_holder >= 3).then_some(m)
    })
    .await;
    assert_eq!(m.voice_not_holder, 3, "{m:?}");
    assert_eq!(m.voice_delivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_speaker_id_is_overwritten() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    let mut b = gw.terminal(GUARD_A2).await;
    a.join(UNIT_A).await.unwrap();
    b.join(UNIT_A).await.unwrap();
    let burst = a.talk(UNIT_A, Class::Normal).await.unwrap();
    let spoofed = VoiceHeader {
        group: UNIT_A,
        speaker: CONSOLE_PS,
        burst,
        seq: 0,
        flags: 0,
    };
    a.send_raw_datagram(spoofed.to_datagram(&[9, 9])).unwrap();
    let v = tokio::time::timeout(DEADLINE, b.recv_voice())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        v.header.speaker, GUARD_A1,
        "the gateway stamps the authenticated sender"
    );
    assert_eq!(v.opus(), &[9, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_entry_hears_who_talks_and_the_rest_of_the_burst() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    a.join(UNIT_A).await.unwrap();
    let burst = a.talk(UNIT_A, Class::Normal).await.unwrap();
    a.send_voice(UNIT_A, burst, 0, &[1], false).unwrap();

    let mut late = gw.terminal(STAFF_A3).await;
    late.join(UNIT_A).await.unwrap();
    // Right after Joined: who talks.
    let next = late.next_event_within(DEADLINE).await.unwrap();
    match next {
        ServerMsg::FloorTaken {
            group,
            speaker,
            burst: b,
            name,
            ..
        } => {
            assert_eq!((group, speaker.0, b), (UNIT_A, GUARD_A1, burst));
            assert_eq!(name, "张伟");
        }
        other => panic!("expected FloorTaken after Joined, got {other:?}"),
    }
    for seq in 1..5 {
        a.send_voice(UNIT_A, burst, seq, &[1], false).unwrap();
    }
    let got = frames(&late, 4).await;
    assert_eq!(
        got.iter().map(|h| h.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(
        drain_voice(&late, Duration::from_millis(400))
            .await
            .is_empty(),
        "nothing more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_survived_and_counted() {
    let gw = TestGateway::start(ORG).await;
    let mut a = gw.terminal(GUARD_A1).await;
    let mut b = gw.terminal(GUARD_A2).await;
    a.join(UNIT_A).await.unwrap();
    b.join(UNIT_A).await.unwrap();
    let garbage: [&[u8]; 5] = [
        b"\x00",
        b"\xff\xff\xff",
        &[0x10; 13],
        &[0x20; 40],
        &[0x1f; 30],
    ];
    for g in garbage {
        a.send_raw_datagram(Bytes::copy_from_slice(g)).unwrap();
    }
    // A datagram for a group that does not exist.
    let header = VoiceHeader {
        group: GroupId(999_999),
        speaker: 0,
        burst: 1,
        seq: 0,
        flags: 0,
    };
    a.send_raw_datagram(header.to_datagram(&[1])).unwrap();
    let m = eventually("the six bad datagrams to be counted", || {
        let m = gw.gateway.metrics();
        (m.voice_malformed + m.voice_unknown_group >= 6).then_some(m)
    })
    .await;
    assert_eq!(m.voice_malformed, 5, "{m:?}");
    assert_eq!(m.voice_unknown_group, 1, "{m:?}");
    // The sender's session and everyone else's still work.
    let burst = a.talk(UNIT_A, Class::Normal).await.unwrap();
    a.send_voice(UNIT_A, burst, 0, &[7], true).unwrap();
    let v = tokio::time::timeout(DEADLINE, b.recv_voice())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.header.speaker, GUARD_A1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_change_keeps_the_burst() {
    let gw = TestGateway::start(ORG).await;
    // QUIC migration of DATAGRAM voice (a rebind bypasses the library's
    // media socket, so SRTP would not follow it).
    ptt_terminal_sim::terminal::set_media_offer(&gw.client, false);
    let mut a = gw.terminal(GUARD_A1).await;
    let mut b = gw.terminal(GUARD_A2).await;
    a.join(UNIT_A).await.unwrap();
    b.join(UNIT_A).await.unwrap();
    let burst = a.talk(UNIT_A, Class::Normal).await.unwrap();
    for seq in 0..5 {
        a.send_voice(UNIT_A, burst, seq, &[1], false).unwrap();
    }
    frames(&b, 5).await;
    let old = gw.client.local_addr().unwrap();

    // The cell handover: the client's UDP socket (address and port) changes.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let new = socket.local_addr().unwrap();
    assert_ne!(old.port(), new.port());
    gw.client.rebind(socket).unwrap();

    for seq in 5..15 {
        a.send_voice(UNIT_A, burst, seq, &[1], false).unwrap();
        // Paced, as a talking terminal sends: the scenario, not a wait.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The burst continues after the migration (one frame of the ten may be
    // lost in the handover).
    let after = frames(&b, 9).await;
    assert!(after
        .iter()
        .all(|h| h.burst == burst && h.speaker == GUARD_A1));
    assert_eq!(
        gw.gateway.holder(UNIT_A).map(|t| t.0),
        Some(GUARD_A1),
        "still holds the floor"
    );
    assert_eq!(
        gw.gateway.metrics().sessions_authenticated,
        2,
        "no reconnect happened"
    );
}

/// With `transport.ack_every_packets` above 2, the gateway asks listeners
/// (ACK-frequency extension) to acknowledge voice less often, and they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_acknowledge_less_often_when_the_gateway_asks() {
    let mut acks = Vec::new();
    for every in [2u32, 8] {
        let gw = TestGateway::start_with(ORG, |c| {
            c.transport.ack_every_packets = std::num::NonZeroU32::new(every).unwrap();
        })
        .await;
        // Acknowledgements of DATAGRAM voice (the library offers SRTP).
        ptt_terminal_sim::terminal::set_media_offer(&gw.client, false);
        let mut talker = gw.terminal(GUARD_A1).await;
        let mut mate = gw.terminal(GUARD_A2).await;
        talker.join(UNIT_A).await.unwrap();
        mate.join(UNIT_A).await.unwrap();
        let burst = talker.talk(UNIT_A, Class::Normal).await.unwrap();
        assert_eq!(taken(&mut mate, UNIT_A).await, GUARD_A1);
        let before = mate.connection().stats().frame_tx.acks;
        for seq in 0..40u16 {
            talker
                .send_voice(UNIT_A, burst, seq, &[0xf8, 0xff, 0xfe], seq == 39)
                .unwrap();
            // Paced, so the frames arrive as a stream to acknowledge: the
            // scenario, not a wait.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        frames(&mate, 40).await;
        // The quiet 300 ms also lets the last ACKs go out.
        assert!(
            drain_voice(&mate, Duration::from_millis(300))
                .await
                .is_empty(),
            "every frame heard once"
        );
        let stats = mate.connection().stats();
        assert_eq!(
            stats.frame_rx.ack_frequency > 0,
            every != 2,
            "the extension is used only when configured"
        );
        acks.push(stats.frame_tx.acks - before);
    }
    eprintln!("ACK frames for 40 frames (default, 8 per ACK): {acks:?}");
    assert!(
        acks[1] < acks[0],
        "ACK frames sent for 40 frames: {} asked for 8 per ACK, {} by default",
        acks[1],
        acks[0]
    );
}
