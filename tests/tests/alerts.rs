//! Alerts over real QUIC: targets, receipts, store-and-forward, duplicate
//! suppression, refusals.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::control::{split_frame, VERSION};
use ptt_codec::{
    AlertBody, AlertKind, ClientMsg, ErrorCode, GroupId, Location, ReceiptStatus, ServerMsg,
    Target, TerminalId,
};
use ptt_terminal_sim::terminal::{Error, SeenAlerts, Terminal};
use ptt_tests::eventually::DEADLINE;
use ptt_tests::org::*;
use ptt_tests::{eventually, TestGateway};

fn body(title: &str) -> AlertBody {
    AlertBody {
        kind: AlertKind::Dispatch,
        priority: 3,
        ttl_s: 600,
        title: title.into(),
        text: "城南路165号，两名男子试图拉车门".into(),
        location: Some(Location {
            lat_e7: 290_800_000,
            lon_e7: 1_196_400_000,
            address: "城南路165号".into(),
        }),
        attachments: Vec::new(),
    }
}

fn refused(r: Result<(u64, u32), Error>) -> ErrorCode {
    match r {
        Err(Error::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn updates(console: &mut Terminal, alert: u64, status: ReceiptStatus, n: usize) -> Vec<u32> {
    let mut who = Vec::new();
    while who.len() < n {
        let t = console
            .wait_for(|m| match m {
                ServerMsg::ReceiptUpdate {
                    alert: a,
                    terminal,
                    status: s,
                    ..
                } if *a == alert && *s == status => Some(Ok(terminal.0)),
                _ => None,
            })
            .await
            .unwrap();
        who.push(t);
    }
    who.sort_unstable();
    who
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_alert_reaches_every_member_and_receipts_flow_back() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut members = Vec::new();
    for id in [GUARD_A1, GUARD_A2, STAFF_A3, POLICE_A] {
        members.push(gw.terminal(id).await);
    }
    let mut bystander = gw.terminal(GUARD_B1).await;

    let (alert, n) = console
        .send_alert(Target::Group(UNIT_A), body("拉车门"))
        .await
        .unwrap();
    assert_eq!(n, 4);
    for m in &mut members {
        let a = m.next_alert().await.unwrap();
        assert_eq!((a.alert, a.issuer.0), (alert, CONSOLE_PS));
        assert_eq!(a.body, body("拉车门"));
        assert_eq!(a.expires_ms - a.created_ms, 600_000);
    }
    assert_eq!(
        updates(&mut console, alert, ReceiptStatus::Delivered, 4).await,
        vec![GUARD_A1, GUARD_A2, STAFF_A3, POLICE_A]
    );
    assert!(
        bystander
            .next_event_within(Duration::from_millis(300))
            .await
            .is_err(),
        "other units get nothing"
    );

    // The first guard reads, accepts, arrives, resolves; the staff member declines.
    for s in [
        ReceiptStatus::Read,
        ReceiptStatus::Accepted,
        ReceiptStatus::Arrived,
        ReceiptStatus::Resolved,
    ] {
        assert_eq!(members[0].receipt(alert, s, "").await.unwrap(), s);
        assert_eq!(updates(&mut console, alert, s, 1).await, vec![GUARD_A1]);
    }
    assert_eq!(
        members[2]
            .receipt(alert, ReceiptStatus::Rejected, "在岗位上走不开")
            .await
            .unwrap(),
        ReceiptStatus::Rejected
    );
    let reason = console
        .wait_for(|m| match m {
            ServerMsg::ReceiptUpdate {
                status: ReceiptStatus::Rejected,
                reason,
                ..
            } => Some(Ok(reason.clone())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "在岗位上走不开");
    // A late "read" changes nothing; accepting after declining is refused.
    assert_eq!(
        members[0]
            .receipt(alert, ReceiptStatus::Read, "")
            .await
            .unwrap(),
        ReceiptStatus::Resolved
    );
    let e = members[2]
        .receipt(alert, ReceiptStatus::Accepted, "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::InvalidReceipt,
                ..
            }
        ),
        "{e}"
    );

    let (total, counts) = console.alert_status(alert).await.unwrap();
    assert_eq!(total, 4);
    let by = |s: ReceiptStatus| counts.by_status[usize::from(s.code())];
    assert_eq!(
        (
            by(ReceiptStatus::Delivered),
            by(ReceiptStatus::Resolved),
            by(ReceiptStatus::Rejected)
        ),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_and_subtree_targets_pick_the_right_people() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let (_, n) = console
        .send_alert(
            Target::Terminals(vec![
                TerminalId(GUARD_A1),
                TerminalId(GUARD_B1),
                TerminalId(GUARD_A1),
            ]),
            body("点名"),
        )
        .await
        .unwrap();
    assert_eq!(n, 2, "listed terminals, each once");
    // Police only (bit 1), under police station 3: the officer there and the unit lead.
    let (_, n) = console
        .send_alert(Target::Subtree { node: 3, roles: 1 }, body("民警集合"))
        .await
        .unwrap();
    assert_eq!(n, 2);
    // Everyone under the co-governance station.
    let (_, n) = console
        .send_alert(Target::Subtree { node: 4, roles: 0 }, body("全体"))
        .await
        .unwrap();
    assert_eq!(n, 5);
    let mut police = gw.terminal(POLICE_PS).await;
    assert_eq!(police.next_alert().await.unwrap().body.title, "民警集合");
    // The city console reaches the other police station's unit too.
    let mut city = gw.terminal(CITY_CONSOLE).await;
    let (_, n) = city
        .send_alert(Target::Group(OTHER_UNIT), body("跨层级调度"))
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alerts_and_receipts_are_refused_with_stable_codes() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut guard = gw.terminal(GUARD_A1).await;
    assert_eq!(
        refused(guard.send_alert(Target::Group(UNIT_A), body("x")).await),
        ErrorCode::TargetNotAllowed
    );
    assert_eq!(
        refused(
            console
                .send_alert(Target::Group(OTHER_UNIT), body("x"))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );
    assert_eq!(
        refused(
            console
                .send_alert(Target::Terminals(vec![TerminalId(1101)]), body("x"))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );
    assert_eq!(
        refused(
            console
                .send_alert(Target::Group(GroupId(4242)), body("x"))
                .await
        ),
        ErrorCode::UnknownGroup
    );
    assert_eq!(
        refused(console.send_alert(Target::Group(UNIT_A), body("  ")).await),
        ErrorCode::AlertInvalid
    );
    let forever = AlertBody {
        ttl_s: 0,
        ..body("x")
    };
    assert_eq!(
        refused(console.send_alert(Target::Group(UNIT_A), forever).await),
        ErrorCode::AlertInvalid
    );
    // The console alone in its own target: nobody to send to.
    assert_eq!(
        refused(
            console
                .send_alert(Target::Terminals(vec![TerminalId(CONSOLE_PS)]), body("x"))
                .await
        ),
        ErrorCode::AlertInvalid
    );

    let (alert, _) = console
        .send_alert(Target::Group(UNIT_B), body("only unit B"))
        .await
        .unwrap();
    let e = guard
        .receipt(alert, ReceiptStatus::Accepted, "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::NotRecipient,
                ..
            }
        ),
        "{e}"
    );
    let e = guard
        .receipt(alert + 100, ReceiptStatus::Read, "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::UnknownAlert,
                ..
            }
        ),
        "{e}"
    );
    // Only the issuer may ask for the status.
    let e = guard.alert_status(alert).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::UnknownAlert,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_terminal_gets_the_alert_when_it_comes_back() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let (first, _) = console
        .send_alert(Target::Group(UNIT_B), body("第一条"))
        .await
        .unwrap();
    let (second, _) = console
        .send_alert(Target::Group(UNIT_B), body("第二条"))
        .await
        .unwrap();
    let (_, counts) = console.alert_status(first).await.unwrap();
    assert_eq!(counts.by_status[0], 1, "pending while the guard is offline");

    let mut guard = gw.terminal(GUARD_B1).await;
    assert_eq!(
        guard.next_alert().await.unwrap().alert,
        first,
        "oldest first"
    );
    assert_eq!(guard.next_alert().await.unwrap().alert, second);
    updates(&mut console, second, ReceiptStatus::Delivered, 1).await;
    // Delivered once: a reconnect brings nothing new.
    guard.close();
    let mut again = gw.terminal_from_new_port(GUARD_B1).await;
    while let Ok(m) = again.next_event_within(Duration::from_millis(500)).await {
        assert!(
            !matches!(m, ServerMsg::Alert { .. }),
            "no redelivery after the delivered receipt was stored"
        );
    }
}

/// Connects by hand, receives one alert without acknowledging it (as if the
/// receipt was lost with the connection), and closes.
async fn receive_without_receipt(gw: &TestGateway, id: u32) -> u64 {
    let conn = gw
        .client
        .connect(gw.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let mut hello = BytesMut::new();
    ClientMsg::Hello {
        version: VERSION,
        terminal: TerminalId(id),
        credential: Bytes::copy_from_slice(&gw.key.credential(TerminalId(id))),
        media: ptt_codec::MediaOffer::NONE,
    }
    .encode(&mut hello);
    send.write_all(&hello).await.unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), conn.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let bytes = stream.read_to_end(1 << 16).await.unwrap();
    let alert = match ServerMsg::decode(split_frame(&bytes).unwrap()).unwrap() {
        ServerMsg::Alert { alert, .. } => alert,
        other => panic!("{other:?}"),
    };
    conn.close(0u32.into(), b"lost");
    alert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_alert_is_shown_once() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let (alert, _) = console
        .send_alert(Target::Terminals(vec![TerminalId(GUARD_B1)]), body("重复"))
        .await
        .unwrap();
    // The terminal showed it, but its delivery receipt never reached the gateway.
    assert_eq!(receive_without_receipt(&gw, GUARD_B1).await, alert);
    let seen = SeenAlerts::default();
    assert!(seen.insert(alert));
    // The lost connection is gone from the gateway (the console's remains),
    // so the terminal comes back as a new session, not a replacement.
    eventually("the gateway to drop the lost connection", || {
        gw.endpoint.open_connections() == 1
    })
    .await;

    let credential = gw.key.credential(TerminalId(GUARD_B1));
    let endpoint = gw.new_client_endpoint();
    let mut t = Terminal::connect_with_seen(
        &endpoint,
        gw.addr,
        "localhost",
        TerminalId(GUARD_B1),
        &credential,
        seen.clone(),
    )
    .await
    .unwrap();
    // The gateway delivers it again; the library acknowledges but does not show it.
    assert_eq!(
        updates(&mut console, alert, ReceiptStatus::Delivered, 1).await,
        vec![GUARD_B1]
    );
    assert!(t
        .next_event_within(Duration::from_millis(300))
        .await
        .is_ok_and(|m| !matches!(m, ServerMsg::Alert { .. })));
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nearest_members_get_the_dispatch_and_consoles_see_positions() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    console.watch_positions(3).unwrap();
    // Incident at 29.0800 N 119.6400 E. Members stand 100 m, 200 m, 300 m and
    // 2 km east of it; one more (of another police station) at 50 m.
    let east = |m: f64| 1_196_400_000 + (m / 97.2 * 10_000.0) as i32;
    let mut near = Vec::new();
    for (id, metres) in [
        (GUARD_A1, 100.0),
        (GUARD_A2, 200.0),
        (STAFF_A3, 300.0),
        (GUARD_B1, 2000.0),
        (1101, 50.0),
    ] {
        let t = gw.terminal(id).await;
        t.report_position(290_800_000, east(metres), 10).unwrap();
        near.push(t);
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        if let ServerMsg::PositionUpdate { terminal, .. } =
            console.next_event_within(DEADLINE).await.unwrap()
        {
            seen.push(terminal.0);
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![GUARD_A1, GUARD_A2, STAFF_A3, GUARD_B1],
        "positions under police station 3 only"
    );

    let (alert, n) = console
        .send_alert(
            Target::Nearest {
                k: 2,
                radius_m: 1000,
            },
            body("就近处置"),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    for t in &mut near[..2] {
        assert_eq!(t.next_alert().await.unwrap().alert, alert);
    }
    for t in &mut near[2..] {
        while let Ok(m) = t.next_event_within(Duration::from_millis(300)).await {
            assert!(
                !matches!(m, ServerMsg::Alert { .. }),
                "{} is not among the two nearest of its command",
                t.id()
            );
        }
    }
    // A member who goes offline is not "available". Its unit's member count
    // shows when the gateway has taken it offline (its session is cleared
    // before its groups are told).
    near[0].join(UNIT_A).await.unwrap();
    assert_eq!(gw.gateway.online(UNIT_A), Some(1));
    near[0].close();
    eventually("the closed member to go offline", || {
        gw.gateway.online(UNIT_A) == Some(0)
    })
    .await;
    let (_, n) = console
        .send_alert(
            Target::Nearest {
                k: 1,
                radius_m: 1000,
            },
            body("再派"),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(near[1].next_alert().await.unwrap().body.title, "再派");
    // Nobody within 10 m; no location at all.
    assert_eq!(
        refused(
            console
                .send_alert(Target::Nearest { k: 1, radius_m: 10 }, body("x"))
                .await
        ),
        ErrorCode::AlertInvalid
    );
    let nowhere = AlertBody {
        location: None,
        attachments: Vec::new(),
        ..body("x")
    };
    assert_eq!(
        refused(
            console
                .send_alert(
                    Target::Nearest {
                        k: 1,
                        radius_m: 1000
                    },
                    nowhere
                )
                .await
        ),
        ErrorCode::AlertInvalid
    );
    // A guard may not watch positions.
    near[1].watch_positions(5).unwrap();
    let e = near[1]
        .wait_for(|m| match m {
            ServerMsg::Error {
                code, frame: 0x0c, ..
            } => Some(Ok(*code)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(e, ErrorCode::TargetNotAllowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sos_alerts_the_unit_and_station_preempts_and_can_be_cancelled() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut officer = gw.terminal(POLICE_A).await;
    officer.join(UNIT_A).await.unwrap();
    let mut mate = gw.terminal(GUARD_A2).await;
    mate.join(UNIT_A).await.unwrap();
    let mut guard = gw.terminal(GUARD_A1).await;
    guard
        .report_position(290_800_000, 1_196_400_000, 8)
        .unwrap();
    // The officer is talking when the guard hits SOS (without having joined).
    officer
        .talk(UNIT_A, ptt_codec::Class::Normal)
        .await
        .unwrap();

    let alert = guard.sos().await.unwrap();
    let limit = guard
        .wait_for(|m| match m {
            ServerMsg::FloorGranted {
                group, limit_ms, ..
            } if *group == UNIT_A => Some(Ok(*limit_ms)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(limit, 10_000, "hot-mic burst");
    let cause = officer
        .wait_for(|m| match m {
            ServerMsg::FloorRevoked { cause, .. } => Some(Ok(*cause)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(cause, ptt_codec::RevokeCause::Preempted);
    for t in [&mut officer, &mut mate, &mut console] {
        let a = t.next_alert().await.unwrap();
        assert_eq!(a.alert, alert);
        assert_eq!(a.body.kind, AlertKind::Sos);
        assert_eq!(a.body.title, "SOS 紧急求助: 张伟");
        assert_eq!(
            a.body.location.as_ref().map(|l| (l.lat_e7, l.lon_e7)),
            Some((290_800_000, 1_196_400_000))
        );
    }
    // Another unit's guard cannot cancel it; the station console can.
    let mut other = gw.terminal(GUARD_B1).await;
    let e = other.cancel_sos(TerminalId(GUARD_A1)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::TargetNotAllowed,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        console.cancel_sos(TerminalId(GUARD_A1)).await.unwrap(),
        alert
    );
    for t in [&mut guard, &mut mate] {
        let by = t
            .wait_for(|m| match m {
                ServerMsg::AlertCancelled { alert: a, by } if *a == alert => Some(Ok(by.0)),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(by, CONSOLE_PS);
    }
    mate.wait_for(|m| matches!(m, ServerMsg::FloorIdle { .. }).then_some(Ok(())))
        .await
        .unwrap();
    assert_eq!(
        gw.gateway
            .alert_cancelled(alert)
            .unwrap()
            .map(|(by, _)| by.0),
        Some(CONSOLE_PS),
        "who cancelled is recorded"
    );
    // Nothing left to cancel; a terminal cancels its own.
    let e = console.cancel_sos(TerminalId(GUARD_A1)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::UnknownAlert,
                ..
            }
        ),
        "{e}"
    );
    let again = guard.sos().await.unwrap();
    assert_eq!(guard.cancel_sos(TerminalId(GUARD_A1)).await.unwrap(), again);
    assert_eq!(
        gw.gateway
            .alert_cancelled(again)
            .unwrap()
            .map(|(by, _)| by.0),
        Some(GUARD_A1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_alerts_can_be_taken_before_a_terminal_is_dropped() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut guard = gw.terminal(GUARD_B1).await;
    let (first, _) = console
        .send_alert(Target::Group(UNIT_B), body("第一条"))
        .await
        .unwrap();
    let (second, _) = console
        .send_alert(Target::Group(UNIT_B), body("第二条"))
        .await
        .unwrap();
    // Both delivered and acknowledged, neither read by the app yet.
    updates(&mut console, second, ReceiptStatus::Delivered, 1).await;
    updates(&mut console, first, ReceiptStatus::Delivered, 1).await;
    let mut unread: Vec<u64> = guard
        .take_unread_alerts()
        .into_iter()
        .map(|a| a.alert)
        .collect();
    unread.sort_unstable();
    assert_eq!(unread, vec![first, second]);
    assert!(guard.take_unread_alerts().is_empty());
    // The gateway does not send them again to a new connection.
    let seen = guard.seen_alerts();
    guard.close();
    let mut again = gw.terminal_from_new_port(GUARD_B1).await;
    assert_eq!(seen.len(), 2);
    while let Ok(m) = again.next_event_within(Duration::from_millis(300)).await {
        assert!(!matches!(m, ServerMsg::Alert { .. }), "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_receipts_are_stored_in_the_order_sent() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut guard = gw.terminal(GUARD_B1).await;
    let mut alerts = Vec::new();
    for i in 0..20 {
        let (a, _) = console
            .send_alert(Target::Group(UNIT_B), body(&format!("任务 {i}")))
            .await
            .unwrap();
        alerts.push(a);
    }
    for _ in &alerts {
        guard.next_alert().await.unwrap();
    }
    // Accepted and arrived sent back to back, without waiting in between:
    // were "arrived" stored first, "accepted" would be a stale duplicate and
    // the issuer would never hear of the acceptance.
    for a in &alerts {
        for status in [ReceiptStatus::Accepted, ReceiptStatus::Arrived] {
            guard
                .send(ClientMsg::AlertReceipt {
                    alert: *a,
                    status,
                    reason: String::new(),
                })
                .unwrap();
        }
    }
    for a in &alerts {
        assert_eq!(
            updates(&mut console, *a, ReceiptStatus::Accepted, 1).await,
            vec![GUARD_B1]
        );
        assert_eq!(
            updates(&mut console, *a, ReceiptStatus::Arrived, 1).await,
            vec![GUARD_B1]
        );
    }
}
