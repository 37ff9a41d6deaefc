//! Checks the hex test vectors in docs/PROTOCOL.md against the code, both
//! ways: the code encodes each value to exactly the documented bytes, and
//! decodes the documented bytes back to the value.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use ptt_codec::control::split_frame;
use ptt_codec::*;

fn documented() -> BTreeMap<String, Vec<u8>> {
    let doc = include_str!("../../docs/PROTOCOL.md");
    let section = doc
        .split("## 6. Test vectors")
        .nth(1)
        .expect("vectors section");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let hex = cells.get(2)?.trim_matches('`').replace(' ', "");
            Some((name.to_owned(), hex::decode(hex).expect("valid hex")))
        })
        .collect()
}

enum Vector {
    Client(ClientMsg),
    Server(ServerMsg),
    Voice(VoiceHeader, &'static [u8]),
}

fn expected() -> Vec<(&'static str, Vector)> {
    use Vector::*;
    let g = GroupId(42);
    let t = TerminalId(1001);
    vec![
        (
            "hello",
            Client(ClientMsg::Hello {
                version: 1,
                terminal: t,
                credential: Bytes::from_static(&[0xa1, 0xb2, 0xc3, 0xd4]),
            }),
        ),
        ("join", Client(ClientMsg::Join { group: g })),
        ("leave", Client(ClientMsg::Leave { group: g })),
        (
            "floor-request-emergency",
            Client(ClientMsg::FloorRequest {
                group: g,
                class: Class::Emergency,
            }),
        ),
        (
            "floor-release",
            Client(ClientMsg::FloorRelease { group: g }),
        ),
        ("ping", Client(ClientMsg::Ping { nonce: 7 })),
        ("logout", Client(ClientMsg::Logout)),
        (
            "welcome-resumed",
            Server(ServerMsg::Welcome {
                terminal: t,
                name: "张伟".into(),
                resumed: true,
                groups: vec![
                    Membership {
                        group: g,
                        talk: true,
                    },
                    Membership {
                        group: GroupId(40),
                        talk: false,
                    },
                ],
            }),
        ),
        (
            "joined",
            Server(ServerMsg::Joined {
                group: g,
                talk: true,
                name: "共治单元1".into(),
                online: vec![t, TerminalId(1002)],
            }),
        ),
        ("left", Server(ServerMsg::Left { group: g })),
        (
            "floor-granted",
            Server(ServerMsg::FloorGranted {
                group: g,
                burst: 5,
                limit_ms: 30_000,
            }),
        ),
        (
            "floor-denied-receive-only",
            Server(ServerMsg::FloorDenied {
                group: GroupId(40),
                cause: DenyCause::ReceiveOnly,
            }),
        ),
        (
            "floor-queued",
            Server(ServerMsg::FloorQueued {
                group: g,
                position: 2,
            }),
        ),
        (
            "floor-taken",
            Server(ServerMsg::FloorTaken {
                group: g,
                speaker: t,
                burst: 5,
                class: Class::Normal,
                name: "张伟".into(),
            }),
        ),
        ("floor-idle", Server(ServerMsg::FloorIdle { group: g })),
        (
            "floor-revoked-too-long",
            Server(ServerMsg::FloorRevoked {
                group: g,
                burst: 5,
                cause: RevokeCause::BurstTooLong,
            }),
        ),
        (
            "presence-online",
            Server(ServerMsg::Presence {
                group: g,
                terminal: TerminalId(1002),
                online: true,
            }),
        ),
        (
            "error-join-denied",
            Server(ServerMsg::Error {
                code: ErrorCode::JoinDenied,
                frame: 2,
                group: Some(GroupId(99)),
                message: "denied".into(),
            }),
        ),
        ("pong", Server(ServerMsg::Pong { nonce: 7 })),
        (
            "voice-from-terminal",
            Voice(
                VoiceHeader {
                    group: g,
                    speaker: 0,
                    burst: 5,
                    seq: 17,
                    flags: 0,
                },
                &[0xf8, 0xff, 0xfe],
            ),
        ),
        (
            "alert-send-group",
            Client(ClientMsg::AlertSend {
                request: 7,
                target: Target::Group(GroupId(5)),
                body: AlertBody {
                    kind: AlertKind::Dispatch,
                    priority: 3,
                    ttl_s: 600,
                    title: "拉车门".into(),
                    text: String::new(),
                    location: Some(Location {
                        lat_e7: 290_800_000,
                        lon_e7: 1_196_400_000,
                        address: "城南路165号".into(),
                    }),
                    attachments: vec![],
                },
            }),
        ),
        (
            "alert-receipt-rejected",
            Client(ClientMsg::AlertReceipt {
                alert: 12,
                status: ReceiptStatus::Rejected,
                reason: "走不开".into(),
            }),
        ),
        (
            "alert-accepted",
            Server(ServerMsg::AlertAccepted {
                request: 7,
                alert: 12,
                recipients: 4,
            }),
        ),
        (
            "attachment-put",
            Client(ClientMsg::AttachmentPut {
                request: 8,
                mime: "image/jpeg".into(),
                size: 1 << 20,
            }),
        ),
        (
            "receipt-saved",
            Server(ServerMsg::ReceiptSaved {
                alert: 12,
                status: ReceiptStatus::Accepted,
            }),
        ),
        (
            "voice-relayed-end",
            Voice(
                VoiceHeader {
                    group: g,
                    speaker: 1001,
                    burst: 5,
                    seq: 18,
                    flags: voice::FLAG_END,
                },
                &[0xf8, 0xff, 0xfe],
            ),
        ),
    ]
}

#[test]
fn every_documented_vector_matches_the_code() {
    let doc = documented();
    let expected = expected();
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    let doc_names: Vec<&str> = doc.keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        doc_names, sorted,
        "vector names in PROTOCOL.md and in this test differ"
    );

    for (name, vector) in expected {
        let bytes = &doc[name];
        let mut out = BytesMut::new();
        match &vector {
            Vector::Client(m) => {
                m.encode(&mut out);
                let frame = split_frame(bytes).unwrap();
                assert_eq!(frame.len(), bytes.len(), "{name}");
                assert_eq!(&ClientMsg::decode(frame).unwrap(), m, "{name} decodes");
            }
            Vector::Server(m) => {
                m.encode(&mut out);
                let frame = split_frame(bytes).unwrap();
                assert_eq!(frame.len(), bytes.len(), "{name}");
                assert_eq!(&ServerMsg::decode(frame).unwrap(), m, "{name} decodes");
            }
            Vector::Voice(h, opus) => {
                h.encode(opus, &mut out);
                let (decoded, payload) = VoiceHeader::decode(bytes).unwrap();
                assert_eq!((&decoded, payload), (h, *opus), "{name} decodes");
            }
        }
        assert_eq!(
            hex::encode(&out),
            hex::encode(bytes),
            "{name} encodes as documented"
        );
    }
}
