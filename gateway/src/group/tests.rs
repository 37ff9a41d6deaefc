//! The shell around the group machine, over real QUIC connection handles
//! (only as sinks: nothing is sent on them) and tokio's paused clock.

use std::time::Duration;

use ptt_codec::RevokeCause;
use tokio::sync::mpsc;
use tokio::time::advance;

use super::*;
use crate::outbox::testing::connection;

const G: GroupId = GroupId(7);
const T: fn(u32) -> TerminalId = TerminalId;

/// A member whose outbox the test reads.
fn member(conn: &Link, session: u64) -> (Member, mpsc::Receiver<Box<ServerMsg>>) {
    member_with(conn, session, 64)
}

fn member_with(
    conn: &Link,
    session: u64,
    outbox: usize,
) -> (Member, mpsc::Receiver<Box<ServerMsg>>) {
    let (outbox, rx) = Outbox::new(conn.clone(), outbox);
    let link = Contact {
        session,
        conn: conn.clone(),
        outbox,
    };
    let member = Member {
        talk: true,
        priority: 80,
        name: Arc::from("T"),
        link,
    };
    (member, rx)
}

fn received(rx: &mut mpsc::Receiver<Box<ServerMsg>>) -> Vec<ServerMsg> {
    std::iter::from_fn(|| rx.try_recv().ok().map(|m| *m)).collect()
}

/// Lets the group's timer task run at the current (paused) instant.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn t2_revokes_through_the_shell_in_paused_time() {
    let (_server, _client, conn) = connection().await;
    tokio::time::pause();
    let (audit, mut audited) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let config = floor::Config {
        talk_limit: Duration::from_secs(30),
        queue_capacity: 16,
    };
    let group = Arc::new(Group::new(
        G,
        Arc::from("Unit"),
        config,
        Duration::from_secs(1),
        metrics.clone(),
        audit,
    ));
    let (a, mut a_rx) = member(&conn, 1);
    let (b, mut b_rx) = member(&conn, 1);
    group.attach(T(1), a, true);
    group.attach(T(2), b, true);
    assert_eq!(group.online(), 2);
    assert_eq!(group.fanout().receivers.len(), 2);
    received(&mut a_rx);
    received(&mut b_rx);

    group.request_floor(T(1), Class::Normal);
    assert!(matches!(
        received(&mut a_rx)[..],
        [ServerMsg::FloorGranted {
            burst: 1,
            limit_ms: 30_000,
            ..
        }]
    ));
    assert!(matches!(
        received(&mut b_rx)[..],
        [ServerMsg::FloorTaken { burst: 1, .. }]
    ));
    assert_eq!(group.holder(), Some(T(1)));
    assert_eq!(group.fanout().talker.map(|t| t.terminal), Some(T(1)));

    settle().await;
    advance(Duration::from_millis(29_999)).await;
    settle().await;
    assert!(received(&mut a_rx).is_empty(), "not before T2");
    assert_eq!(group.holder(), Some(T(1)));

    // The timer wheel rounds up to its next millisecond tick, which need not
    // line up with the instant time was paused at.
    advance(Duration::from_millis(2)).await;
    settle().await;
    assert_eq!(
        received(&mut a_rx),
        [
            ServerMsg::FloorRevoked {
                group: G,
                burst: 1,
                cause: RevokeCause::BurstTooLong,
            },
            ServerMsg::FloorIdle { group: G },
        ]
    );
    assert_eq!(received(&mut b_rx), [ServerMsg::FloorIdle { group: G }]);
    assert_eq!(group.holder(), None);
    assert!(group.fanout().talker.is_none());
    let m = metrics.snapshot();
    assert_eq!((m.floor_granted, m.floor_revoked), (1, 1));
    let record = audited.try_recv().expect("the burst was logged");
    assert_eq!(record.ended_by.as_str(), "burst_too_long");
    let talked_ms = record.ended_ms - record.granted_ms;
    assert!((30_000..=30_001).contains(&talked_ms), "{talked_ms} ms");
    assert_eq!((record.terminal, record.burst), (T(1), 1));
}

/// Steps race on two threads; a listener still sees them in the order they
/// ran: bursts in increasing order, never two `FloorIdle`s in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_steps_are_delivered_in_the_order_they_ran() {
    const ROUNDS: u16 = 2_000;
    let (_server, _client, conn) = connection().await;
    let (audit, _audited) = mpsc::unbounded_channel();
    let group = Arc::new(Group::new(
        G,
        Arc::from("Unit"),
        floor::Config::default(),
        Duration::from_secs(1),
        Arc::new(Metrics::default()),
        audit,
    ));
    for t in 1..=2 {
        let (m, _rx) = member(&conn, 1);
        group.attach(T(t), m, false);
    }
    let (listener, mut heard) = member_with(&conn, 1, 4 * usize::from(ROUNDS) + 16);
    group.attach(T(3), listener, false);
    let talkers: Vec<_> = (1..=2)
        .map(|t| {
            let group = group.clone();
            tokio::task::spawn_blocking(move || {
                for _ in 0..ROUNDS {
                    group.request_floor(T(t), Class::Normal);
                    group.release_floor(T(t));
                }
            })
        })
        .collect();
    for talker in talkers {
        talker.await.unwrap();
    }
    let mut last_burst = 0;
    let mut idle = false;
    let mut bursts = 0;
    for msg in received(&mut heard) {
        match msg {
            ServerMsg::FloorTaken { burst, .. } => {
                assert!(burst > last_burst, "burst {burst} after {last_burst}");
                (last_burst, idle) = (burst, false);
                bursts += 1;
            }
            ServerMsg::FloorIdle { .. } => {
                assert!(!idle, "two FloorIdle in a row after burst {last_burst}");
                idle = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(bursts > 0 && idle);
}

/// A burst of leaves and joins through the shell reaches the other member
/// as one `Presence` when the group's timer fires, in paused time.
#[tokio::test]
async fn a_burst_of_presence_is_coalesced_by_the_timer_task() {
    let (_server, _client, conn) = connection().await;
    tokio::time::pause();
    let (audit, _audited) = mpsc::unbounded_channel();
    let group = Arc::new(Group::new(
        G,
        Arc::from("Unit"),
        floor::Config::default(),
        Duration::from_secs(1),
        Arc::new(Metrics::default()),
        audit,
    ));
    let (a, mut a_rx) = member(&conn, 1);
    group.attach(T(1), a, false);
    let (b, _b_rx) = member(&conn, 1);
    group.attach(T(2), b, false);
    for _ in 0..500 {
        assert!(group.detach(T(2), 1));
        let (b, _b_rx) = member(&conn, 1);
        group.attach(T(2), b, false);
    }
    assert!(group.detach(T(2), 1));
    let online = |msgs: Vec<ServerMsg>| -> Vec<bool> {
        msgs.into_iter()
            .filter_map(|m| match m {
                ServerMsg::Presence { online, .. } => Some(online),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        online(received(&mut a_rx)),
        [true],
        "the first join, at once"
    );
    settle().await;
    advance(Duration::from_millis(1_001)).await;
    settle().await;
    assert_eq!(online(received(&mut a_rx)), [false], "the net change");
}

/// A member that stopped reading loses presence, is not closed for it, and
/// still gets the floor messages it needs.
#[tokio::test]
async fn presence_to_a_member_behind_is_dropped_not_fatal() {
    let (_server, _client, conn) = connection().await;
    let (audit, _audited) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let group = Arc::new(Group::new(
        G,
        Arc::from("Unit"),
        floor::Config::default(),
        Duration::ZERO,
        metrics.clone(),
        audit,
    ));
    let (slow, mut slow_rx) = member_with(&conn, 1, 8);
    group.attach(T(1), slow, false);
    let mut others = Vec::new();
    for t in 2..=20 {
        let (m, rx) = member(&conn, 1);
        others.push(rx);
        group.attach(T(t), m, false);
    }
    assert!(conn.close_reason().is_none(), "not closed for presence");
    assert!(metrics.snapshot().presence_dropped > 0);
    group.request_floor(T(2), Class::Normal);
    let got = received(&mut slow_rx);
    assert!(got.len() <= 8, "{got:?}");
    assert!(matches!(got.last(), Some(ServerMsg::FloorTaken { .. })));
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn bursts_are_told_to_the_recorder_with_their_class_and_end() {
    let (_server, _client, conn) = connection().await;
    let (audit, _audited) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::default());
    let (tap, events) = crate::recorder::test_tap(metrics.clone());
    let config = floor::Config {
        talk_limit: Duration::from_secs(30),
        queue_capacity: 16,
    };
    let group = Arc::new(
        Group::new(
            G,
            Arc::from("Unit"),
            config,
            Duration::from_secs(1),
            metrics,
            audit,
        )
        .recording_to(tap),
    );
    let (a, _a_rx) = member(&conn, 1);
    let (b, _b_rx) = member(&conn, 1);
    group.attach(T(1), a, true);
    group.attach(T(2), b, true);
    assert!(events().is_empty(), "joining records nothing");

    group.request_floor(T(1), Class::Normal);
    let burst = group.fanout().talker.expect("granted").burst;
    let h = ptt_codec::VoiceHeader {
        group: G,
        speaker: 0,
        burst,
        seq: 0,
        flags: 0,
    };
    group.record(&h, &h.to_datagram(&[9 << 3, 1, 2]));
    // An emergency request pre-empts it: its end, then the new burst.
    group.request_floor(T(2), Class::Emergency);
    let sos = group.fanout().talker.expect("granted").burst;
    group.release_floor(T(2));
    assert_eq!(
        events(),
        [
            format!("start 1 {burst} Normal"),
            format!("end {burst} preempted dropped=0"),
            format!("start 2 {sos} Emergency"),
            format!("end {sos} released dropped=0"),
            format!("frame {burst} 0"),
        ]
    );
}
