//! The group machine stepped in virtual time: no runtime, no sockets, no
//! sleeps. Links are plain numbers (`10 * terminal + session`), so each
//! output shows which session it was addressed to.

use super::*;
use ptt_codec::RevokeCause;

const G: GroupId = GroupId(7);
const T: fn(u32) -> TerminalId = TerminalId;
const LIMIT: Duration = Duration::from_secs(30);

type Link = u32;

/// Presence told at once, every time (see `coalesced` for the interval).
fn machine() -> Machine<Link> {
    Machine::new(
        G,
        Arc::from("Unit A"),
        floor::Config::default(),
        Duration::ZERO,
    )
}

/// Presence coalesced per second.
fn coalesced() -> Machine<Link> {
    Machine::new(G, Arc::from("Unit A"), floor::Config::default(), SECOND)
}

const SECOND: Duration = Duration::from_secs(1);

fn member(t: u32, session: u64, talk: bool, priority: u8) -> Member<Link> {
    Member {
        talk,
        priority,
        name: Arc::from(format!("T{t}").as_str()),
        session,
        link: t * 10 + u32::try_from(session).expect("small session ids"),
    }
}

fn drain(m: &mut Machine<Link>) -> Vec<Output<Link>> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn send(t: u32, session: u32, msg: ServerMsg) -> Output<Link> {
    Output::Send {
        to: T(t),
        link: t * 10 + session,
        msg,
    }
}

fn presence(t: u32, online: bool) -> ServerMsg {
    ServerMsg::Presence {
        group: G,
        terminal: T(t),
        online,
    }
}

fn granted(burst: u16) -> ServerMsg {
    ServerMsg::FloorGranted {
        group: G,
        burst,
        limit_ms: 30_000,
    }
}

fn taken(speaker: u32, burst: u16, class: Class) -> ServerMsg {
    ServerMsg::FloorTaken {
        group: G,
        speaker: T(speaker),
        burst,
        class,
        name: format!("T{speaker}"),
    }
}

fn idle() -> ServerMsg {
    ServerMsg::FloorIdle { group: G }
}

fn ended(m: &[Output<Link>]) -> Vec<(u32, u16, EndedBy)> {
    m.iter()
        .filter_map(|o| match o {
            Output::BurstEnded(e) => Some((e.burst.terminal.0, e.burst.id, e.by)),
            _ => None,
        })
        .collect()
}

/// Three talkers online (1, 2, 3, session 1 each), outputs drained.
fn three() -> Machine<Link> {
    let mut m = machine();
    for t in 1..=3 {
        m.handle_attach(Instant::now(), T(t), member(t, 1, true, 80), true);
    }
    drain(&mut m);
    m
}

#[test]
fn attach_announces_and_others_see_presence() {
    let mut m = machine();
    m.handle_attach(Instant::now(), T(2), member(2, 1, true, 80), true);
    assert_eq!(
        drain(&mut m),
        [
            send(
                2,
                1,
                ServerMsg::Joined {
                    group: G,
                    talk: true,
                    name: "Unit A".into(),
                    online: vec![T(2)],
                }
            ),
            Output::Publish,
        ]
    );
    // Without `announce` (a restored membership) no Joined; presence goes
    // to the others in terminal order.
    m.handle_attach(Instant::now(), T(3), member(3, 1, false, 80), false);
    m.handle_attach(Instant::now(), T(1), member(1, 1, true, 80), true);
    let out = drain(&mut m);
    assert_eq!(
        out,
        [
            send(2, 1, presence(3, true)),
            Output::Publish,
            send(2, 1, presence(1, true)),
            send(3, 1, presence(1, true)),
            send(
                1,
                1,
                ServerMsg::Joined {
                    group: G,
                    talk: true,
                    name: "Unit A".into(),
                    online: vec![T(1), T(2), T(3)],
                }
            ),
            Output::Publish,
        ]
    );
    assert_eq!(m.online(), 3);
}

#[test]
fn late_entry_learns_who_talks() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(2), Class::Normal, None);
    drain(&mut m);
    m.handle_attach(Instant::now(), T(4), member(4, 1, true, 80), true);
    let out = drain(&mut m);
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(
        out[3..5],
        [
            send(4, 1, out_joined(&out)),
            send(4, 1, taken(2, 1, Class::Normal))
        ]
    );
    assert_eq!(out[5], Output::Publish);
    // The talker itself re-attaching (a reconnect) is not told it talks.
    m.handle_attach(Instant::now(), T(2), member(2, 2, true, 80), false);
    assert_eq!(drain(&mut m), [Output::Publish]);
}

fn out_joined(out: &[Output<Link>]) -> ServerMsg {
    out.iter()
        .find_map(|o| match o {
            Output::Send {
                msg: msg @ ServerMsg::Joined { .. },
                ..
            } => Some(msg.clone()),
            _ => None,
        })
        .expect("a Joined was sent")
}

#[test]
fn a_grant_tells_the_talker_and_everyone_else() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(2), Class::Normal, None);
    assert_eq!(
        drain(&mut m),
        [
            send(1, 1, taken(2, 1, Class::Normal)),
            send(2, 1, granted(1)),
            send(3, 1, taken(2, 1, Class::Normal)),
            Output::Publish,
        ]
    );
    assert_eq!(m.holder().map(|b| b.terminal), Some(T(2)));
    assert_eq!(m.poll_timeout(), Some(t0 + LIMIT));
    assert_eq!(m.poll_timer(), Some((Timer::TalkLimit, t0 + LIMIT)));
}

#[test]
fn receive_only_and_strangers_are_not_granted() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_attach(Instant::now(), T(4), member(4, 1, false, 200), false);
    drain(&mut m);
    m.handle_request(t0, T(4), Class::Emergency, None);
    assert_eq!(
        drain(&mut m),
        [send(
            4,
            1,
            ServerMsg::FloorDenied {
                group: G,
                cause: DenyCause::ReceiveOnly,
            }
        )]
    );
    m.handle_request(t0, T(9), Class::Normal, None);
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.holder(), None);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_busy_floor_queues_then_hands_over_on_release() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(1), Class::Normal, None);
    drain(&mut m);
    m.handle_request(t0, T(3), Class::Normal, None);
    assert_eq!(
        drain(&mut m),
        [send(
            3,
            1,
            ServerMsg::FloorQueued {
                group: G,
                position: 1
            }
        )]
    );
    let t1 = t0 + Duration::from_secs(4);
    m.handle_release(t1, T(1));
    let out = drain(&mut m);
    assert_eq!(
        out,
        [
            Output::BurstEnded(Ended {
                burst: floor::Burst {
                    terminal: T(1),
                    id: 1,
                    class: Class::Normal,
                    priority: 80,
                    granted_at: t0,
                    limit: LIMIT,
                },
                ended_at: t1,
                by: EndedBy::Released,
            }),
            send(1, 1, taken(3, 2, Class::Normal)),
            send(2, 1, taken(3, 2, Class::Normal)),
            send(3, 1, granted(2)),
            Output::Publish,
        ]
    );
    assert_eq!(m.poll_timeout(), Some(t1 + LIMIT));
    // A release by someone without the floor changes nothing, not even the
    // snapshot.
    m.handle_release(t1, T(2));
    assert!(drain(&mut m).is_empty());
    m.handle_release(t1, T(3));
    assert_eq!(
        drain(&mut m)[1..],
        [
            send(1, 1, idle()),
            send(2, 1, idle()),
            send(3, 1, idle()),
            Output::Publish
        ]
    );
}

#[test]
fn a_full_queue_denies() {
    let t0 = Instant::now();
    let mut m: Machine<Link> = Machine::new(
        G,
        Arc::from("Unit A"),
        floor::Config {
            talk_limit: LIMIT,
            queue_capacity: 1,
        },
        Duration::ZERO,
    );
    for t in 1..=3 {
        m.handle_attach(Instant::now(), T(t), member(t, 1, true, 80), false);
    }
    m.handle_request(t0, T(1), Class::Normal, None);
    m.handle_request(t0, T(2), Class::Normal, None);
    drain(&mut m);
    m.handle_request(t0, T(3), Class::Normal, None);
    assert_eq!(
        drain(&mut m),
        [send(
            3,
            1,
            ServerMsg::FloorDenied {
                group: G,
                cause: DenyCause::NoResources,
            }
        )]
    );
}

#[test]
fn t2_revokes_the_burst_in_virtual_time() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(2), Class::Normal, None);
    drain(&mut m);
    let deadline = m.poll_timeout().expect("a burst is timed");
    m.handle_timeout(deadline - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty(), "early timeouts do nothing");
    m.handle_timeout(deadline);
    let out = drain(&mut m);
    assert_eq!(ended(&out), [(2, 1, EndedBy::BurstTooLong)]);
    assert_eq!(
        out[1..],
        [
            send(
                2,
                1,
                ServerMsg::FloorRevoked {
                    group: G,
                    burst: 1,
                    cause: RevokeCause::BurstTooLong,
                }
            ),
            send(1, 1, idle()),
            send(2, 1, idle()),
            send(3, 1, idle()),
            Output::Publish,
        ]
    );
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn a_request_with_its_own_limit_times_out_on_it() {
    let t0 = Instant::now();
    let mut m = three();
    let hot_mic = Duration::from_secs(10);
    m.handle_request(t0, T(1), Class::Emergency, Some(hot_mic));
    let out = drain(&mut m);
    assert_eq!(
        out[0],
        send(
            1,
            1,
            ServerMsg::FloorGranted {
                group: G,
                burst: 1,
                limit_ms: 10_000,
            }
        )
    );
    assert_eq!(m.poll_timeout(), Some(t0 + hot_mic));
}

#[test]
fn a_higher_request_preempts_the_holder() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(1), Class::Normal, None);
    drain(&mut m);
    let t1 = t0 + Duration::from_secs(2);
    m.handle_request(t1, T(3), Class::Emergency, None);
    let out = drain(&mut m);
    assert_eq!(ended(&out), [(1, 1, EndedBy::Preempted)]);
    assert_eq!(
        out[1..],
        [
            send(
                1,
                1,
                ServerMsg::FloorRevoked {
                    group: G,
                    burst: 1,
                    cause: RevokeCause::Preempted,
                }
            ),
            send(1, 1, taken(3, 2, Class::Emergency)),
            send(2, 1, taken(3, 2, Class::Emergency)),
            send(3, 1, granted(2)),
            Output::Publish,
        ]
    );
}

#[test]
fn the_holder_leaving_ends_its_burst() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_request(t0, T(2), Class::Normal, None);
    drain(&mut m);
    assert!(m.handle_detach(t0, T(2), 1));
    let out = drain(&mut m);
    assert_eq!(
        out,
        [
            send(1, 1, presence(2, false)),
            send(3, 1, presence(2, false)),
            out[2].clone(),
            send(1, 1, idle()),
            send(3, 1, idle()),
            Output::Publish,
        ]
    );
    assert_eq!(ended(&out), [(2, 1, EndedBy::Left)]);
    assert_eq!(m.online(), 2);
    assert_eq!(m.holder(), None);
}

#[test]
fn a_queued_member_leaving_moves_the_queue_up() {
    let t0 = Instant::now();
    let mut m = three();
    m.handle_attach(Instant::now(), T(4), member(4, 1, true, 80), false);
    m.handle_request(t0, T(1), Class::Normal, None);
    m.handle_request(t0, T(2), Class::Normal, None);
    m.handle_request(t0, T(4), Class::Normal, None);
    drain(&mut m);
    assert!(m.handle_detach(t0, T(2), 1));
    assert_eq!(
        drain(&mut m),
        [
            send(1, 1, presence(2, false)),
            send(3, 1, presence(2, false)),
            send(4, 1, presence(2, false)),
            send(
                4,
                1,
                ServerMsg::FloorQueued {
                    group: G,
                    position: 1
                }
            ),
            Output::Publish,
        ]
    );
}

#[test]
fn a_reconnect_replaces_the_link_and_the_old_detach_is_ignored() {
    let t0 = Instant::now();
    let mut m = three();
    // Session 2 of terminal 2 attaches before session 1's cleanup ran.
    m.handle_attach(Instant::now(), T(2), member(2, 2, true, 80), false);
    assert_eq!(
        drain(&mut m),
        [Output::Publish],
        "no presence: it never left"
    );
    assert!(!m.handle_detach(t0, T(2), 1), "the older session's detach");
    assert!(drain(&mut m).is_empty());
    assert_eq!(m.member(T(2)).map(|m| m.link), Some(22));
    // Messages now go to the new session's link.
    m.handle_request(t0, T(2), Class::Normal, None);
    assert!(drain(&mut m).contains(&send(2, 2, granted(1))));
    assert!(m.handle_detach(t0, T(2), 2));
    assert_eq!(m.online(), 2);
}

#[test]
fn ended_by_has_the_audit_spelling() {
    let all = [
        (EndedBy::Released, "released"),
        (EndedBy::Left, "left"),
        (EndedBy::Preempted, "preempted"),
        (EndedBy::BurstTooLong, "burst_too_long"),
        (EndedBy::Revoked, "revoked"),
    ];
    for (by, s) in all {
        assert_eq!(by.as_str(), s);
    }
    assert_eq!(EndedBy::from(RevokeCause::Other), EndedBy::Revoked);
}

fn presences(out: &[Output<Link>]) -> Vec<(u32, u32, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg:
                    ServerMsg::Presence {
                        terminal, online, ..
                    },
                ..
            } => Some((to.0, terminal.0, *online)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_burst_of_joins_and_leaves_is_one_presence_per_interval() {
    let t0 = Instant::now();
    let mut m = coalesced();
    m.handle_attach(t0, T(1), member(1, 1, true, 80), false);
    m.handle_attach(t0, T(2), member(2, 1, true, 80), false);
    assert_eq!(presences(&drain(&mut m)), [(1, 2, true)], "told at once");
    // 2 leaves and joins 1,000 times within the second.
    for i in 0..1000 {
        let now = t0 + Duration::from_micros(i);
        m.handle_detach(now, T(2), 1);
        m.handle_attach(now, T(2), member(2, 1, true, 80), false);
    }
    m.handle_detach(t0 + Duration::from_millis(2), T(2), 1);
    assert!(presences(&drain(&mut m)).is_empty(), "coalesced");
    assert_eq!(m.poll_timer(), Some((Timer::Presence, t0 + SECOND)));
    m.handle_timeout(t0 + Duration::from_millis(999));
    assert!(presences(&drain(&mut m)).is_empty(), "not due yet");
    // The net change: offline.
    m.handle_timeout(t0 + SECOND);
    assert_eq!(presences(&drain(&mut m)), [(1, 2, false)]);
    assert_eq!(m.poll_timer(), None);
}

#[test]
fn no_net_change_tells_nothing() {
    let t0 = Instant::now();
    let mut m = coalesced();
    m.handle_attach(t0, T(1), member(1, 1, true, 80), false);
    m.handle_attach(t0, T(2), member(2, 1, true, 80), false);
    drain(&mut m);
    // Join, leave, join within the interval: they were told "online".
    let t1 = t0 + Duration::from_millis(10);
    m.handle_detach(t1, T(2), 1);
    m.handle_attach(t1, T(2), member(2, 1, true, 80), false);
    m.handle_timeout(t0 + SECOND);
    assert!(presences(&drain(&mut m)).is_empty());
    // Quiet for an interval: the next change is told at once again.
    let t2 = t0 + 3 * SECOND;
    m.handle_detach(t2, T(2), 1);
    assert_eq!(presences(&drain(&mut m)), [(1, 2, false)]);
    m.handle_attach(t2, T(2), member(2, 1, true, 80), false);
    assert!(presences(&drain(&mut m)).is_empty());
    m.handle_timeout(t2 + SECOND);
    assert_eq!(presences(&drain(&mut m)), [(1, 2, true)]);
}

#[test]
fn the_earlier_timer_is_polled() {
    let t0 = Instant::now();
    let mut m = coalesced();
    m.handle_attach(t0, T(1), member(1, 1, true, 80), false);
    m.handle_attach(t0, T(2), member(2, 1, true, 80), false);
    m.handle_request(t0, T(1), Class::Normal, None);
    assert_eq!(m.poll_timer(), Some((Timer::TalkLimit, t0 + LIMIT)));
    m.handle_detach(t0, T(2), 1);
    assert_eq!(m.poll_timer(), Some((Timer::Presence, t0 + SECOND)));
    m.handle_timeout(t0 + SECOND);
    assert_eq!(m.poll_timer(), Some((Timer::TalkLimit, t0 + LIMIT)));
}
