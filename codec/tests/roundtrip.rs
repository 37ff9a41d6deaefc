//! Encode/decode round trips and total decoding over arbitrary input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ptt_codec::control::{split_frame, FrameError, MAX_BODY};
use ptt_codec::voice::{stamp_speaker, MAX_OPUS_PACKET};
use ptt_codec::*;

fn group() -> impl Strategy<Value = GroupId> {
    (1u32..).prop_map(GroupId)
}

fn terminal() -> impl Strategy<Value = TerminalId> {
    (1u32..).prop_map(TerminalId)
}

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(Class::ALL)
}

fn name() -> impl Strategy<Value = String> {
    // Chinese and ASCII, within the name limit once UTF-8 encoded.
    "[a-zA-Z0-9 张伟王芳李娜刘洋陈静共治单元派出所]{0,60}"
}

fn body() -> impl Strategy<Value = AlertBody> {
    (
        prop::sample::select(AlertKind::ALL),
        0u8..=3,
        any::<u32>(),
        name(),
        "[a-z 城南路号两名男子试图拉车门]{0,200}",
        prop::option::of((
            -900_000_000i32..=900_000_000,
            -1_800_000_000i32..=1_800_000_000,
            name(),
        )),
        prop::collection::vec(attachment(), 0..=8),
    )
        .prop_map(
            |(kind, priority, ttl_s, title, text, loc, attachments)| AlertBody {
                kind,
                priority,
                ttl_s,
                title,
                text,
                location: loc.map(|(lat_e7, lon_e7, address)| Location {
                    lat_e7,
                    lon_e7,
                    address,
                }),
                attachments,
            },
        )
}

fn attachment() -> impl Strategy<Value = AttachmentRef> {
    (1u64.., 0u32..=4 << 20, "[a-z/]{0,20}").prop_map(|(id, size, mime)| AttachmentRef {
        id,
        size,
        mime,
    })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        prop::collection::vec(terminal(), 1..50).prop_map(Target::Terminals),
        group().prop_map(Target::Group),
        (1u32.., 0u8..64).prop_map(|(node, roles)| Target::Subtree { node, roles }),
        (1u16..=100, 1u32..=50_000).prop_map(|(k, radius_m)| Target::Nearest { k, radius_m }),
        Just(Target::Station),
    ]
}

fn receipt() -> impl Strategy<Value = ReceiptStatus> {
    prop::sample::select(&ReceiptStatus::ALL[1..])
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (
            any::<u8>(),
            terminal(),
            prop::collection::vec(any::<u8>(), 1..=64),
            any::<bool>()
        )
            .prop_map(|(version, terminal, c, srtp)| ClientMsg::Hello {
                version,
                terminal,
                credential: Bytes::from(c),
                media: if srtp {
                    MediaOffer::SRTP
                } else {
                    MediaOffer::NONE
                },
            }),
        group().prop_map(|group| ClientMsg::Join { group }),
        group().prop_map(|group| ClientMsg::Leave { group }),
        (group(), class()).prop_map(|(group, class)| ClientMsg::FloorRequest { group, class }),
        group().prop_map(|group| ClientMsg::FloorRelease { group }),
        any::<u64>().prop_map(|nonce| ClientMsg::Ping { nonce }),
        Just(ClientMsg::Logout),
        (any::<u32>(), body(), target()).prop_map(|(request, body, target)| ClientMsg::AlertSend {
            request,
            body,
            target
        }),
        (any::<u64>(), receipt(), name()).prop_map(|(alert, status, reason)| {
            ClientMsg::AlertReceipt {
                alert,
                status,
                reason,
            }
        }),
        any::<u64>().prop_map(|alert| ClientMsg::AlertQuery { alert }),
        (
            -900_000_000i32..=900_000_000,
            -1_800_000_000i32..=1_800_000_000,
            any::<u16>()
        )
            .prop_map(|(lat_e7, lon_e7, accuracy_m)| ClientMsg::Position {
                lat_e7,
                lon_e7,
                accuracy_m
            }),
        any::<u32>().prop_map(|node| ClientMsg::WatchPositions { node }),
        Just(ClientMsg::Sos),
        terminal().prop_map(|terminal| ClientMsg::SosCancel { terminal }),
        (any::<u32>(), "[a-z/]{1,20}", 1u32..).prop_map(|(request, mime, size)| {
            ClientMsg::AttachmentPut {
                request,
                mime,
                size,
            }
        }),
        (1u64..).prop_map(|attachment| ClientMsg::AttachmentFetch { attachment }),
        any::<u64>().prop_map(|alert| ClientMsg::DrillReportQuery { alert }),
        any::<bool>().prop_map(|srtp| ClientMsg::MediaMode { srtp }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (
            terminal(),
            name(),
            any::<bool>(),
            prop::collection::vec((group(), any::<bool>()), 0..20),
            prop::option::of(1..=u32::MAX)
        )
            .prop_map(|(terminal, name, resumed, g, ssrc)| ServerMsg::Welcome {
                terminal,
                name,
                resumed,
                groups: g
                    .into_iter()
                    .map(|(group, talk)| Membership { group, talk })
                    .collect(),
                media: ssrc.map(|ssrc| MediaAnswer { ssrc }),
            }),
        (
            group(),
            any::<bool>(),
            name(),
            prop::collection::vec(terminal(), 0..20)
        )
            .prop_map(|(group, talk, name, online)| ServerMsg::Joined {
                group,
                talk,
                name,
                online
            }),
        group().prop_map(|group| ServerMsg::Left { group }),
        (group(), any::<u16>(), any::<u32>()).prop_map(|(group, burst, limit_ms)| {
            ServerMsg::FloorGranted {
                group,
                burst,
                limit_ms,
            }
        }),
        (group(), prop::sample::select(DenyCause::ALL))
            .prop_map(|(group, cause)| ServerMsg::FloorDenied { group, cause }),
        (group(), any::<u16>())
            .prop_map(|(group, position)| ServerMsg::FloorQueued { group, position }),
        (group(), terminal(), any::<u16>(), class(), name()).prop_map(
            |(group, speaker, burst, class, name)| ServerMsg::FloorTaken {
                group,
                speaker,
                burst,
                class,
                name
            }
        ),
        group().prop_map(|group| ServerMsg::FloorIdle { group }),
        (
            group(),
            any::<u16>(),
            prop::sample::select(RevokeCause::ALL)
        )
            .prop_map(|(group, burst, cause)| ServerMsg::FloorRevoked {
                group,
                burst,
                cause
            }),
        (group(), terminal(), any::<bool>()).prop_map(|(group, terminal, online)| {
            ServerMsg::Presence {
                group,
                terminal,
                online,
            }
        }),
        (
            prop::sample::select(ErrorCode::ALL),
            any::<u8>(),
            prop::option::of(group()),
            name()
        )
            .prop_map(|(code, frame, group, message)| ServerMsg::Error {
                code,
                frame,
                group,
                message
            }),
        any::<u64>().prop_map(|nonce| ServerMsg::Pong { nonce }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(request, alert, recipients)| {
            ServerMsg::AlertAccepted {
                request,
                alert,
                recipients,
            }
        }),
        (any::<u64>(), terminal(), any::<u64>(), any::<u64>(), body()).prop_map(
            |(alert, issuer, created_ms, expires_ms, body)| ServerMsg::Alert {
                alert,
                issuer,
                created_ms,
                expires_ms,
                body
            }
        ),
        (any::<u64>(), terminal(), receipt(), any::<u64>(), name()).prop_map(
            |(alert, terminal, status, at_ms, reason)| ServerMsg::ReceiptUpdate {
                alert,
                terminal,
                status,
                at_ms,
                reason
            }
        ),
        (any::<u64>(), receipt())
            .prop_map(|(alert, status)| ServerMsg::ReceiptSaved { alert, status }),
        (any::<u64>(), any::<u32>(), any::<[u32; 7]>(), any::<u32>()).prop_map(
            |(alert, recipients, by_status, expired)| ServerMsg::AlertStatus {
                alert,
                recipients,
                counts: StatusCounts { by_status, expired }
            }
        ),
        (any::<u32>(), prop::sample::select(ErrorCode::ALL), name()).prop_map(
            |(request, code, message)| ServerMsg::AlertRefused {
                request,
                code,
                message
            }
        ),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(request, attachment, size)| {
            ServerMsg::AttachmentStored {
                request,
                attachment,
                size,
            }
        }),
        (any::<u64>(), any::<u64>(), "[a-z/]{0,20}", 0u32..=4 << 20).prop_map(
            |(attachment, alert, mime, size)| ServerMsg::Attachment {
                attachment,
                alert,
                mime,
                size
            }
        ),
        (any::<u64>(), any::<u32>())
            .prop_map(|(alert, size)| ServerMsg::DrillReport { alert, size }),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_msg()) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let frame = split_frame(&buf).unwrap();
        prop_assert_eq!(frame.len(), buf.len());
        prop_assert_eq!(ClientMsg::decode(frame).unwrap(), msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let frame = split_frame(&buf).unwrap();
        prop_assert_eq!(frame.len(), buf.len());
        prop_assert_eq!(ServerMsg::decode(frame).unwrap(), msg);
    }

    /// Every prefix of a valid frame is incomplete, never malformed.
    #[test]
    fn prefixes_are_incomplete(msg in server_msg()) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        for cut in 0..buf.len() {
            prop_assert_eq!(split_frame(&buf[..cut]), Err(FrameError::Incomplete));
        }
    }

    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn decoding_is_total(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(frame) = split_frame(&bytes) {
            prop_assert!(frame.len() <= bytes.len());
            let _ = ClientMsg::decode(frame);
            let _ = ServerMsg::decode(frame);
        }
        let _ = VoiceHeader::decode(&bytes);
    }

    /// Arbitrary bodies behind every known frame type never panic either
    /// (random bytes above rarely hit a known type with a plausible body).
    #[test]
    fn bodies_of_known_types_are_total(kind in 0u8..0x60, body in prop::collection::vec(any::<u8>(), 0..64)) {
        let frame = control::RawFrame { kind, body: &body };
        if let Ok(msg) = ClientMsg::decode(frame) {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            prop_assert_eq!(&buf[3..], &body[..]);
        }
        if let Ok(msg) = ServerMsg::decode(frame) {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            prop_assert_eq!(&buf[3..], &body[..]);
        }
    }

    #[test]
    fn voice_round_trips(
        group in group(), speaker in any::<u32>(), burst in any::<u16>(), seq in any::<u16>(),
        end in any::<bool>(), opus in prop::collection::vec(any::<u8>(), 1..=MAX_OPUS_PACKET),
    ) {
        let header = VoiceHeader { group, speaker, burst, seq, flags: if end { voice::FLAG_END } else { 0 } };
        let datagram = header.to_datagram(&opus);
        let (decoded, payload) = VoiceHeader::decode(&datagram).unwrap();
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(payload, &opus[..]);
        prop_assert_eq!(decoded.is_end(), end);

        let stamped = stamp_speaker(&datagram, TerminalId(77));
        let (restamped, payload) = VoiceHeader::decode(&stamped).unwrap();
        prop_assert_eq!(restamped.speaker, 77);
        prop_assert_eq!(VoiceHeader { speaker, ..restamped }, header);
        prop_assert_eq!(payload, &opus[..]);
    }
}

#[test]
fn oversized_length_is_rejected_before_buffering() {
    let len = (MAX_BODY + 1) as u16;
    let mut buf = vec![control::kind::JOIN];
    buf.extend_from_slice(&len.to_be_bytes());
    assert_eq!(split_frame(&buf), Err(FrameError::TooLong(MAX_BODY + 1)));
}

#[test]
fn hostile_bodies_are_errors() {
    use control::RawFrame;
    let cases: &[(u8, &[u8], Malformed)] = &[
        (control::kind::JOIN, &[0, 0, 0], Malformed::Truncated),
        (
            control::kind::JOIN,
            &[0, 0, 0, 7, 9],
            Malformed::TrailingBytes,
        ),
        (
            control::kind::JOIN,
            &[0, 0, 0, 0],
            Malformed::InvalidValue("group 0"),
        ),
        (
            control::kind::FLOOR_REQUEST,
            &[0, 0, 0, 7, 3],
            Malformed::InvalidValue("class"),
        ),
        (
            control::kind::HELLO,
            &[1, 0, 0, 0, 1, 0],
            Malformed::InvalidValue("credential length"),
        ),
        (
            control::kind::HELLO,
            &[1, 0, 0, 0, 1, 200, 1],
            Malformed::InvalidValue("credential length"),
        ),
        (
            control::kind::HELLO,
            &[1, 0, 0, 0, 1, 4, 1],
            Malformed::Truncated,
        ),
        (0x3f, &[], Malformed::UnknownType(0x3f)),
        // Receipts cannot claim "pending"; alert targets must be sane.
        (
            control::kind::ALERT_RECEIPT,
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            Malformed::InvalidValue("receipt status"),
        ),
        (
            control::kind::ALERT_SEND,
            &[0, 0, 0, 1, 1, 0, 0],
            Malformed::InvalidValue("target terminal count"),
        ),
        (
            control::kind::ALERT_SEND,
            &[0, 0, 0, 1, 9],
            Malformed::InvalidValue("target type"),
        ),
        (
            control::kind::ALERT_SEND,
            &[0, 0, 0, 1, 2, 0, 0, 0, 5, 9],
            Malformed::InvalidValue("alert kind"),
        ),
        (
            control::kind::ALERT_SEND,
            &[0, 0, 0, 1, 2, 0, 0, 0, 5, 1, 4],
            Malformed::InvalidValue("alert priority"),
        ),
        // Attachments: a put needs a media type and a size; references are
        // capped in number.
        (
            control::kind::ATTACHMENT_PUT,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 5],
            Malformed::InvalidValue("empty media type"),
        ),
        (
            control::kind::ATTACHMENT_PUT,
            &[0, 0, 0, 1, 0, 1, b'x', 0, 0, 0, 0],
            Malformed::InvalidValue("empty attachment"),
        ),
        (
            control::kind::ATTACHMENT_FETCH,
            &[0, 0, 0, 0, 0, 0, 0, 0],
            Malformed::InvalidValue("attachment 0"),
        ),
        (
            control::kind::ALERT_SEND,
            // Group target, notice, no location, 9 attachments.
            &[
                0, 0, 0, 1, 2, 0, 0, 0, 5, 2, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 9,
            ],
            Malformed::InvalidValue("attachment count"),
        ),
    ];
    for (kind, body, want) in cases {
        let got = ClientMsg::decode(RawFrame { kind: *kind, body });
        assert_eq!(got, Err(*want), "kind {kind:#x} body {body:?}");
    }
    // A name that claims more bytes than the frame has, and invalid UTF-8.
    let taken = |name: &[u8]| {
        let mut body = vec![0, 0, 0, 7, 0, 0, 0, 9, 0, 1, 0];
        body.extend_from_slice(name);
        body
    };
    let body = taken(&[0, 10, b'a']);
    let frame = RawFrame {
        kind: control::kind::FLOOR_TAKEN,
        body: &body,
    };
    assert_eq!(ServerMsg::decode(frame), Err(Malformed::Truncated));
    let body = taken(&[0, 2, 0xff, 0xfe]);
    let frame = RawFrame {
        kind: control::kind::FLOOR_TAKEN,
        body: &body,
    };
    assert_eq!(ServerMsg::decode(frame), Err(Malformed::InvalidUtf8));
}

#[test]
fn hostile_datagrams_are_errors() {
    let ok = VoiceHeader {
        group: GroupId(7),
        speaker: 0,
        burst: 1,
        seq: 0,
        flags: 0,
    }
    .to_datagram(&[0xf8]);
    assert!(VoiceHeader::decode(&ok).is_ok());
    // Header only, no Opus packet.
    assert_eq!(VoiceHeader::decode(&ok[..13]), Err(Malformed::Truncated));
    assert_eq!(VoiceHeader::decode(&ok[..5]), Err(Malformed::Truncated));
    assert_eq!(VoiceHeader::decode(&[]), Err(Malformed::Truncated));
    let mut bad = ok.to_vec();
    bad[0] = 0x20;
    assert_eq!(
        VoiceHeader::decode(&bad),
        Err(Malformed::InvalidValue("voice version"))
    );
    bad[0] = 0x12;
    assert_eq!(
        VoiceHeader::decode(&bad),
        Err(Malformed::InvalidValue("voice flags"))
    );
    let mut zero_group = ok.to_vec();
    zero_group[1..5].fill(0);
    assert_eq!(
        VoiceHeader::decode(&zero_group),
        Err(Malformed::InvalidValue("group 0"))
    );
    let huge = vec![0x10; voice::MAX_VOICE_DATAGRAM + 1];
    assert_eq!(VoiceHeader::decode(&huge), Err(Malformed::TooLong));
}

#[test]
fn over_long_strings_are_truncated_on_a_char_boundary() {
    let name = "张".repeat(200); // 600 bytes, limit 256
    let mut buf = BytesMut::new();
    ServerMsg::Joined {
        group: GroupId(1),
        talk: true,
        name,
        online: vec![],
    }
    .encode(&mut buf);
    match ServerMsg::decode(split_frame(&buf).unwrap()).unwrap() {
        ServerMsg::Joined { name, .. } => {
            assert_eq!(name.len(), 255);
            assert!(name.chars().all(|c| c == '张'));
        }
        other => panic!("unexpected {other:?}"),
    }
}
