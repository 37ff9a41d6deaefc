//! Floor control over real QUIC: contention, queue, pre-emption, emergency,
//! talk-time limit.

use std::time::{Duration, Instant};

use ptt_codec::{Class, DenyCause, RevokeCause, ServerMsg};
use ptt_terminal_sim::terminal::{FloorAnswer, Terminal};
use ptt_tests::org::*;
use ptt_tests::{eventually, TestGateway};

async fn revoked(t: &mut Terminal) -> RevokeCause {
    t.wait_for(|m| match m {
        ServerMsg::FloorRevoked { group, cause, .. } if *group == UNIT_A => Some(Ok(*cause)),
        _ => None,
    })
    .await
    .unwrap()
}

async fn granted(t: &mut Terminal) -> u16 {
    t.wait_for(|m| match m {
        ServerMsg::FloorGranted { group, burst, .. } if *group == UNIT_A => Some(Ok(*burst)),
        _ => None,
    })
    .await
    .unwrap()
}

async fn unit_a(gw: &TestGateway, ids: &[u32]) -> Vec<Terminal> {
    let mut out = Vec::new();
    for id in ids {
        let mut t = gw.terminal(*id).await;
        t.join(UNIT_A).await.unwrap();
        out.push(t);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_grants_one_and_queues_the_rest_in_order() {
    let gw = TestGateway::start(ORG).await;
    let mut t = unit_a(&gw, &[GUARD_A1, GUARD_A2, STAFF_A3, POLICE_A]).await;
    let first = t[0].request_floor(UNIT_A, Class::Normal).await.unwrap();
    assert!(matches!(first, FloorAnswer::Granted(_)));
    // Staff (priority 60) asks before the guard (80): the guard still goes first.
    assert_eq!(
        t[2].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Queued(1)
    );
    assert_eq!(
        t[1].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Queued(1)
    );
    // The staff member moved back to position 2.
    let pos = t[2]
        .wait_for(|m| match m {
            ServerMsg::FloorQueued { position, .. } => Some(Ok(*position)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(pos, 2);
    // Release: the guard is granted, members see it taken, no idle between.
    t[0].release(UNIT_A).unwrap();
    granted(&mut t[1]).await;
    let next = t[3].wait_for(|m| match m {
        ServerMsg::FloorTaken { speaker, .. } if speaker.0 == GUARD_A2 => Some(Ok(None)),
        ServerMsg::FloorIdle { .. } => Some(Ok(Some(()))),
        _ => None,
    });
    assert_eq!(next.await.unwrap(), None, "handover without an idle floor");
    t[1].release(UNIT_A).unwrap();
    granted(&mut t[2]).await;
    t[2].release(UNIT_A).unwrap();
    t[3].wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(Ok(())))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn police_preempt_a_guard_and_an_emergency_preempts_police() {
    let gw = TestGateway::start(ORG).await;
    let mut t = unit_a(&gw, &[GUARD_A1, POLICE_A, GUARD_A2, STAFF_A3]).await;
    t[0].talk(UNIT_A, Class::Normal).await.unwrap();
    // Police (150) outranks a guard (80).
    assert!(matches!(
        t[1].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Granted(_)
    ));
    assert_eq!(revoked(&mut t[0]).await, RevokeCause::Preempted);
    // A guard's emergency outranks the police officer's normal call.
    assert!(matches!(
        t[2].request_floor(UNIT_A, Class::Emergency).await.unwrap(),
        FloorAnswer::Granted(_)
    ));
    assert_eq!(revoked(&mut t[1]).await, RevokeCause::Preempted);
    let class = t[3]
        .wait_for(|m| match m {
            ServerMsg::FloorTaken { speaker, class, .. } if speaker.0 == GUARD_A2 => {
                Some(Ok(*class))
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(class, Class::Emergency);
    // Nothing pre-empts an emergency from below: police queue behind it.
    assert_eq!(
        t[1].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Queued(1)
    );
    assert_eq!(gw.gateway.holder(UNIT_A).map(|h| h.0), Some(GUARD_A2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_preempts_and_listen_only_members_are_denied() {
    let gw = TestGateway::start(ORG).await;
    let mut guard = gw.terminal(GUARD_A1).await;
    guard.join(UNIT_A).await.unwrap();
    guard.join(STATION_A).await.unwrap();
    assert_eq!(
        guard.request_floor(STATION_A, Class::Normal).await.unwrap(),
        FloorAnswer::Denied(DenyCause::ReceiveOnly)
    );
    // Not joined.
    assert_eq!(
        guard.request_floor(UNIT_B, Class::Normal).await.unwrap(),
        FloorAnswer::Denied(DenyCause::NotJoined)
    );

    guard.talk(UNIT_A, Class::Normal).await.unwrap();
    let mut console = gw.terminal(CONSOLE_PS).await;
    console.join(UNIT_A).await.unwrap();
    assert!(matches!(
        console.request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Granted(_)
    ));
    assert_eq!(revoked(&mut guard).await, RevokeCause::Preempted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_talk_limit_is_revoked_and_the_queue_moves_on() {
    let gw = TestGateway::start_with(ORG, |c| c.floor.talk_limit_s = 1).await;
    let mut t = unit_a(&gw, &[GUARD_A1, GUARD_A2]).await;
    let start = Instant::now();
    let FloorAnswer::Granted(_) = t[0].request_floor(UNIT_A, Class::Normal).await.unwrap() else {
        panic!("not granted")
    };
    assert_eq!(
        t[1].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Queued(1)
    );
    assert_eq!(revoked(&mut t[0]).await, RevokeCause::BurstTooLong);
    // A lower bound only: a slow machine makes the wait longer, never
    // shorter.
    assert!(
        start.elapsed() >= Duration::from_millis(990),
        "not before the limit"
    );
    granted(&mut t[1]).await;
    assert_eq!(gw.gateway.metrics().floor_revoked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_leaving_frees_the_floor() {
    let gw = TestGateway::start(ORG).await;
    let mut t = unit_a(&gw, &[GUARD_A1, GUARD_A2]).await;
    t[0].talk(UNIT_A, Class::Normal).await.unwrap();
    assert_eq!(
        t[1].request_floor(UNIT_A, Class::Normal).await.unwrap(),
        FloorAnswer::Queued(1)
    );
    t[0].close();
    granted(&mut t[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_burst_lands_in_the_floor_audit_log() {
    let gw = TestGateway::start(ORG).await;
    let mut t = unit_a(&gw, &[GUARD_A1, POLICE_A]).await;
    t[0].talk(UNIT_A, Class::Normal).await.unwrap();
    t[1].talk(UNIT_A, Class::Normal).await.unwrap(); // pre-empts the guard
    t[1].release(UNIT_A).unwrap();
    t[0].wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(Ok(())))
        .await
        .unwrap();
    t[0].talk(UNIT_A, Class::Emergency).await.unwrap();
    t[0].close();
    // The audit log is written in batches off the session's task.
    let log = eventually("three bursts in the audit log", || {
        let log = gw.gateway.bursts(UNIT_A, 0).expect("audit log readable");
        if log.len() >= 3 {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    let summary: Vec<(u32, u8, &str)> = log
        .iter()
        .map(|b| (b.terminal.0, b.class, b.ended_by.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (GUARD_A1, 0, "preempted"),
            (POLICE_A, 0, "released"),
            (GUARD_A1, 2, "left")
        ]
    );
    assert!(log.iter().all(|b| b.ended_ms >= b.granted_ms));
}
