//! Out-of-rights actions: refused with their documented codes.

use super::*;

/// The baseline: nothing but legit traffic stays within every bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_attack_everything_is_within_bounds() {
    let gw = GatewayProcess::start("").await;
    let scene = Scene::start(&gw).await;
    tokio::time::sleep(ATTACK).await;
    let outcome = scene.finish().await;
    eprintln!("{outcome}");
    outcome.assert_unharmed();
}

/// Every out-of-rights action of the security review is refused with
/// its documented code, and nobody else notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_rights_actions_are_refused_with_their_codes() {
    let mut gw = GatewayProcess::start("").await;
    let others = Others::make(&gw).await;
    // An SOS of another unit's guard, active.
    let mut in_sos = gw.terminal(SECOND_ATTACKER).await;
    in_sos.sos().await.unwrap();

    let scene = Scene::start(&gw).await;
    let mut a = gw.terminal(ATTACKER).await;
    a.join(VOICE_GROUP).await.unwrap();
    // Joining other units, the police station, the city; a group that
    // does not exist.
    for group in [SECOND_UNIT, OTHER_UNIT, GroupId(3), GroupId(1)] {
        assert_eq!(
            code(&format!("join {group}"), a.join(group).await),
            ErrorCode::JoinDenied
        );
    }
    assert_eq!(
        code("join 4242", a.join(GroupId(4242)).await),
        ErrorCode::UnknownGroup
    );
    // Talking in a listen-only group, or in one not joined.
    assert!(!a.join(STATION).await.unwrap().talk, "listen-only");
    assert_eq!(
        a.request_floor(STATION, Class::Normal).await.unwrap(),
        FloorAnswer::Denied(ptt_codec::DenyCause::ReceiveOnly)
    );
    assert_eq!(
        a.request_floor(SECOND_UNIT, Class::Normal).await.unwrap(),
        FloorAnswer::Denied(ptt_codec::DenyCause::NotJoined)
    );
    assert_eq!(
        code("leave", a.leave(OTHER_UNIT).await),
        ErrorCode::NotJoined
    );
    // Dispatching as a member, to his unit, a terminal, the city.
    for target in [
        Target::Group(VOICE_GROUP),
        Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
        Target::Subtree { node: 1, roles: 0 },
    ] {
        assert_eq!(
            code(
                &format!("dispatch to {target:?}"),
                a.send_alert(target.clone(), dispatch("Fake")).await
            ),
            ErrorCode::TargetNotAllowed
        );
    }
    // Using and fetching someone else's photo.
    assert_eq!(
        code(
            "a report with another's photo",
            a.send_report(report("Mine", &[others.photo])).await
        ),
        ErrorCode::UnknownAttachment
    );
    assert_eq!(
        code(
            "fetching another's photo",
            a.fetch_attachment(others.photo).await
        ),
        ErrorCode::UnknownAttachment
    );
    // Cancelling someone else's SOS.
    assert_eq!(
        code(
            "cancelling another's SOS",
            a.cancel_sos(TerminalId(SECOND_ATTACKER)).await
        ),
        ErrorCode::TargetNotAllowed
    );
    // Watching positions as a member.
    a.watch_positions(VOICE_GROUP.0).unwrap();
    let watched = a
        .wait_for(|m| match m {
            ServerMsg::Error { code, frame, .. }
                if *frame == ptt_codec::control::kind::WATCH_POSITIONS =>
            {
                Some(Ok(*code))
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(watched, ErrorCode::TargetNotAllowed);
    // Receipts, status and drill reports of alerts not his.
    assert_eq!(
        code(
            "a receipt for another's alert",
            a.receipt(others.alert, ptt_codec::ReceiptStatus::Accepted, "")
                .await
        ),
        ErrorCode::NotRecipient
    );
    assert_eq!(
        code("another's alert status", a.alert_status(others.alert).await),
        ErrorCode::UnknownAlert
    );
    assert_eq!(
        code("another's drill report", a.drill_report(others.drill).await),
        ErrorCode::UnknownAlert
    );
    // A second Hello, an upload header on the control stream.
    for (msg, frame) in [
        (
            ClientMsg::Hello {
                version: ptt_codec::control::VERSION,
                terminal: TerminalId(TALKER),
                credential: bytes::Bytes::from_static(&[1; 32]),
                media: ptt_codec::MediaOffer::NONE,
            },
            ptt_codec::control::kind::HELLO,
        ),
        (
            ClientMsg::AttachmentPut {
                request: 9,
                mime: "image/jpeg".into(),
                size: 10,
            },
            ptt_codec::control::kind::ATTACHMENT_PUT,
        ),
    ] {
        a.send(msg).unwrap();
        let got = a
            .wait_for(|m| match m {
                ServerMsg::Error { code, frame: f, .. } if *f == frame => Some(Ok(*code)),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(got, ErrorCode::UnexpectedFrame, "frame {frame:#x}");
    }
    // Voice without the floor, with a spoofed speaker, into his unit
    // where the talker holds the floor, and into a unit not his.
    for group in [VOICE_GROUP, SECOND_UNIT] {
        for seq in 0..50u16 {
            let header = ptt_codec::VoiceHeader {
                group,
                speaker: TALKER,
                burst: seq % 4,
                seq,
                flags: 0,
            };
            a.send_raw_datagram(header.to_datagram(&[0xa5; 80]))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // A console alerting and watching above its node.
    let mut east = gw.terminal(EAST_CONSOLE).await;
    assert_eq!(
        code(
            "a station console alerting the city",
            east.send_alert(Target::Group(GroupId(1)), dispatch("Fake"))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );
    assert_eq!(
        code(
            "a station console alerting another station's unit",
            east.send_alert(Target::Group(OTHER_UNIT), dispatch("Fake"))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );

    let outcome = scene.finish().await;
    eprintln!("{outcome}");
    outcome.assert_unharmed();
    assert!(
        outcome.voice.foreign.values().all(|n| *n == 0),
        "the attacker's voice reached a listener: {outcome}"
    );
    let counters = gw.stop().await;
    assert!(
        counters["voice_not_holder"].as_u64().unwrap()
            + counters["voice_unknown_group"].as_u64().unwrap()
            >= 100,
        "the attacker's 100 frames were dropped and counted: {counters}"
    );
}
