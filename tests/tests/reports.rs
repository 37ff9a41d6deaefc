//! Attachments, upward reports and drill reports over real QUIC.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ptt_codec::alert::MAX_ATTACHMENT;
use ptt_codec::{
    AlertBody, AlertKind, AttachmentRef, ClientMsg, ErrorCode, ReceiptStatus, ServerMsg, Target,
    TerminalId,
};
use ptt_terminal_sim::terminal::{Download, Error};
use ptt_tests::org::*;
use ptt_tests::TestGateway;

/// The screen terminal of the other police station's unit.
const SCREEN: u32 = 1101;

fn body(kind: AlertKind, title: &str, attachments: &[u64]) -> AlertBody {
    AlertBody {
        kind,
        priority: 2,
        ttl_s: 600,
        title: title.into(),
        text: "城南路165号".into(),
        location: None,
        attachments: attachments
            .iter()
            .map(|id| AttachmentRef {
                id: *id,
                size: 0,
                mime: String::new(),
            })
            .collect(),
    }
}

/// A photo-sized payload that is not all one byte.
fn photo(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Err(Error::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screens_get_attachments_pushed_and_handhelds_fetch_them() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CITY_CONSOLE).await;
    let mut screen = gw.terminal(SCREEN).await;
    let mut handheld = gw.terminal(GUARD_A1).await;
    let mut stranger = gw.terminal(GUARD_B1).await;

    let jpeg = photo(3 * 1024 * 1024 + 17);
    let id = console
        .upload_attachment("image/jpeg", jpeg.clone())
        .await
        .unwrap();
    let (alert, n) = console
        .send_alert(
            Target::Terminals(vec![TerminalId(SCREEN), TerminalId(GUARD_A1)]),
            body(AlertKind::Warning, "嫌疑人照片", &[id]),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);

    // Both get the text, with the attachment's real size and type.
    for t in [&mut screen, &mut handheld] {
        let a = t.next_alert().await.unwrap();
        assert_eq!(a.alert, alert);
        assert_eq!(
            a.body.attachments,
            vec![AttachmentRef {
                id,
                size: jpeg.len() as u32,
                mime: "image/jpeg".into()
            }]
        );
    }
    // The screen gets the photo without asking.
    let Download::Attachment {
        attachment,
        alert: through,
        mime,
        data,
    } = screen.next_attachment().await.unwrap()
    else {
        panic!("expected an attachment")
    };
    assert_eq!(
        (attachment, through, mime.as_str()),
        (id, alert, "image/jpeg")
    );
    assert_eq!(data, jpeg);
    // The handheld does not, until it asks.
    assert!(matches!(
        tokio::time::timeout(Duration::from_millis(300), handheld.next_attachment()).await,
        Err(_) | Ok(Err(Error::Timeout(_)))
    ));
    let Download::Attachment { data, .. } = handheld.fetch_attachment(id).await.unwrap() else {
        panic!("expected an attachment")
    };
    assert_eq!(data, jpeg);
    // Someone it was not sent to cannot fetch it, nor can anyone fetch
    // what does not exist.
    assert_eq!(
        code(stranger.fetch_attachment(id).await),
        ErrorCode::UnknownAttachment
    );
    assert_eq!(
        code(handheld.fetch_attachment(id + 100).await),
        ErrorCode::UnknownAttachment
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attachments_are_refused_and_nothing_is_stored() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut other = gw.terminal(CITY_CONSOLE).await;
    let mut guard = gw.terminal(GUARD_A1).await;

    // Over 4 MiB.
    let big = photo(MAX_ATTACHMENT as usize + 1);
    assert_eq!(
        code(console.upload_attachment("image/jpeg", big).await),
        ErrorCode::AttachmentInvalid
    );

    // A stream that announces more than it carries, or carries more.
    for (announced, sent) in [(1000u32, 10usize), (10, 1000)] {
        let mut buf = BytesMut::new();
        ClientMsg::AttachmentPut {
            request: 77 + announced,
            mime: "image/png".into(),
            size: announced,
        }
        .encode(&mut buf);
        buf.extend_from_slice(&photo(sent));
        let mut s = console.connection().open_uni().await.unwrap();
        s.write_all(&buf).await.unwrap();
        s.finish().unwrap();
        let refusal = console
            .wait_for(|m| match m {
                ServerMsg::AlertRefused { request, code, .. } if *request == 77 + announced => {
                    Some(Ok(*code))
                }
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(refusal, ErrorCode::AttachmentInvalid);
    }

    // An alert naming someone else's attachment, or none that exists, is
    // refused whole: no recipient gets anything.
    let theirs = other
        .upload_attachment("image/png", photo(1000))
        .await
        .unwrap();
    for id in [theirs, 999_999] {
        assert_eq!(
            code(
                console
                    .send_alert(Target::Group(UNIT_A), body(AlertKind::Notice, "x", &[id]))
                    .await
            ),
            ErrorCode::UnknownAttachment
        );
    }
    assert!(guard
        .next_event_within(Duration::from_millis(300))
        .await
        .is_err());
    // The connection is still fine.
    let mine = console
        .upload_attachment("image/png", photo(10))
        .await
        .unwrap();
    console
        .send_alert(
            Target::Group(UNIT_A),
            body(AlertKind::Notice, "ok", &[mine]),
        )
        .await
        .unwrap();
    assert_eq!(guard.next_alert().await.unwrap().body.title, "ok");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_push_reports_up_to_their_station_with_receipts() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut city = gw.terminal(CITY_CONSOLE).await;
    let mut guard = gw.terminal(GUARD_A1).await;

    let photo_id = guard
        .upload_attachment("image/jpeg", photo(200_000))
        .await
        .unwrap();
    let mut clue = body(AlertKind::Clue, "可疑车辆", &[photo_id]);
    clue.location = Some(ptt_codec::Location {
        lat_e7: 290_800_000,
        lon_e7: 1_196_400_000,
        address: "城南路165号".into(),
    });
    // The unit's station has no console: the police station's command
    // room gets it, and nobody above it.
    let (report, n) = guard.send_report(clue.clone()).await.unwrap();
    assert_eq!(n, 1);
    let got = console.next_alert().await.unwrap();
    assert_eq!((got.alert, got.issuer.0), (report, GUARD_A1));
    assert_eq!(got.body.kind, AlertKind::Clue);
    assert_eq!(got.body.attachments[0].size, 200_000);
    // A console gets the photo pushed.
    let Download::Attachment { data, .. } = console.next_attachment().await.unwrap() else {
        panic!("expected the photo")
    };
    assert_eq!(data.len(), 200_000);
    assert!(city
        .next_event_within(Duration::from_millis(300))
        .await
        .is_err());

    // The console reads and accepts; the member sees it live and on asking.
    for s in [ReceiptStatus::Read, ReceiptStatus::Accepted] {
        console.receipt(report, s, "").await.unwrap();
    }
    let seen = guard
        .wait_for(|m| match m {
            ServerMsg::ReceiptUpdate {
                alert,
                terminal,
                status: ReceiptStatus::Accepted,
                ..
            } if *alert == report => Some(Ok(terminal.0)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(seen, CONSOLE_PS);
    let (recipients, counts) = guard.alert_status(report).await.unwrap();
    assert_eq!(recipients, 1);
    assert_eq!(counts.by_status[ReceiptStatus::Accepted.code() as usize], 1);

    // Members send reports only to their station, and only reports down
    // the tree are alerts.
    assert_eq!(
        code(
            guard
                .send_alert(Target::Group(UNIT_A), body(AlertKind::Report, "x", &[]))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );
    assert_eq!(
        code(
            guard
                .send_alert(Target::Station, body(AlertKind::Dispatch, "x", &[]))
                .await
        ),
        ErrorCode::AlertInvalid
    );
    assert_eq!(
        code(
            guard
                .send_alert(Target::Group(UNIT_A), body(AlertKind::Dispatch, "x", &[]))
                .await
        ),
        ErrorCode::TargetNotAllowed
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_report_times_each_unit_and_station() {
    let gw = TestGateway::start(ORG).await;
    let mut console = gw.terminal(CONSOLE_PS).await;
    let mut fast = gw.terminal(GUARD_A1).await;
    let mut slow = gw.terminal(GUARD_B1).await;
    let mut outsider = gw.terminal(POLICE_A).await;

    let (drill, n) = console
        .send_alert(
            Target::Subtree { node: 3, roles: 0 },
            body(AlertKind::Drill, "1-3-8 拉动演练", &[]),
        )
        .await
        .unwrap();
    assert_eq!(n, 6, "police station subtree minus the console");
    fast.next_alert().await.unwrap();
    slow.next_alert().await.unwrap();
    fast.receipt(drill, ReceiptStatus::Accepted, "")
        .await
        .unwrap();
    fast.receipt(drill, ReceiptStatus::Arrived, "")
        .await
        .unwrap();

    let json = console.drill_report(drill).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["alert"], drill);
    assert_eq!(report["marks_s"], serde_json::json!([60, 180, 480]));
    let row = |level: &str, node: u32| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["level"] == level && r["node"] == node)
            .unwrap_or_else(|| panic!("no {level} {node} in {json}"))
            .clone()
    };
    let a = row("unit", UNIT_A.0);
    assert_eq!(a["members"], 4);
    assert_eq!(a["accept"]["reached"], 1);
    assert_eq!(a["arrive"]["within"], serde_json::json!([1, 1, 1]));
    let b = row("unit", UNIT_B.0);
    assert_eq!(b["receipt"]["reached"], 1, "delivered: {json}");
    assert_eq!(b["accept"]["reached"], 0);
    let station = row("co_station", STATION_A.0);
    assert_eq!(
        (station["units"].clone(), station["parent"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(row("police_station", 3)["arrive"]["reached"], 1);
    assert_eq!(row("total", 0)["units"], 2);

    // The city console above may see it; a member may not; an alert that
    // is not a drill has no report.
    let mut city = gw.terminal(CITY_CONSOLE).await;
    assert!(city.drill_report(drill).await.is_ok());
    assert_eq!(
        code(outsider.drill_report(drill).await),
        ErrorCode::UnknownAlert
    );
    let (notice, _) = console
        .send_alert(Target::Group(UNIT_B), body(AlertKind::Notice, "n", &[]))
        .await
        .unwrap();
    assert_eq!(
        code(console.drill_report(notice).await),
        ErrorCode::NotADrill
    );
    gw.stop().await;
}
