//! Checks the hex test vectors in docs/PROTOCOL.md against the code, both
//! ways: the code encodes each value to exactly the documented bytes, decodes
//! the documented bytes back to the value, and the decoded value the document
//! prints next to the hex is the one the code decodes. Also checks the
//! credential derivation vector of section 2 with an independent HMAC.
//!
//! After changing a vector, print the table rows to paste into the document:
//! `cargo test -p ptt-codec --test vectors -- --ignored --nocapture`.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use ptt_codec::alert::StatusCounts;
use ptt_codec::control::split_frame;
use ptt_codec::*;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// A vector as the document states it: the bytes and the decoded value.
struct Documented {
    bytes: Vec<u8>,
    decoded: String,
}

fn documented() -> BTreeMap<String, Documented> {
    let section = DOC
        .split("## 6. Test vectors")
        .nth(1)
        .expect("vectors section");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let hex = cells.get(2)?.trim_matches('`').replace(' ', "");
            let decoded = cells.get(3)?.trim_matches('`').to_owned();
            let bytes = hex::decode(hex).expect("valid hex");
            Some((name.to_owned(), Documented { bytes, decoded }))
        })
        .collect()
}

/// Removes the `TerminalId(..)` / `GroupId(..)` wrappers from `Debug`
/// output: the document shows ids as plain numbers.
fn unwrap_ids(mut s: String) -> String {
    for wrapper in ["TerminalId(", "GroupId("] {
        while let Some(start) = s.find(wrapper) {
            let inner = start + wrapper.len();
            let end = inner + s[inner..].find(')').expect("closing parenthesis");
            s = format!("{}{}{}", &s[..start], &s[inner..end], &s[end + 1..]);
        }
    }
    s
}

fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The decoded value as the document prints it: Rust `Debug` notation with
/// ids as plain numbers and byte strings in hex.
fn render(vector: &Vector) -> String {
    let debug = match vector {
        Vector::Client(ClientMsg::Hello {
            version,
            terminal,
            credential,
            media,
        }) => {
            let offer = match *media {
                MediaOffer::NONE => String::new(),
                m => format!(", media: {m:?}"),
            };
            format!(
                "Hello {{ version: {version}, terminal: {}, credential: {}{offer} }}",
                terminal.0,
                spaced_hex(credential)
            )
        }
        Vector::Client(m) => format!("{m:?}"),
        Vector::Server(m) => format!("{m:?}"),
        Vector::Voice(h, opus) => format!("{h:?}, opus: {}", spaced_hex(opus)),
    };
    unwrap_ids(debug)
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
                media: MediaOffer::NONE,
            }),
        ),
        (
            "hello-srtp",
            Client(ClientMsg::Hello {
                version: 1,
                terminal: t,
                credential: Bytes::from_static(&[0xa1, 0xb2, 0xc3, 0xd4]),
                media: MediaOffer::SRTP,
            }),
        ),
        (
            "welcome-srtp",
            Server(ServerMsg::Welcome {
                terminal: t,
                name: "张伟".into(),
                resumed: false,
                groups: vec![],
                media: Some(MediaAnswer { ssrc: 0xdead_beef }),
            }),
        ),
        (
            "media-mode-datagram",
            Client(ClientMsg::MediaMode { srtp: false }),
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
                media: None,
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
        (
            "hello-provisioned",
            Client(ClientMsg::Hello {
                version: 1,
                terminal: TerminalId(1),
                credential: Bytes::from(derive(&TEST_KEY, 1).to_vec()),
                media: MediaOffer::NONE,
            }),
        ),
        (
            "alert-send-terminals",
            Client(ClientMsg::AlertSend {
                request: 9,
                target: Target::Terminals(vec![t, TerminalId(1002)]),
                body: AlertBody {
                    kind: AlertKind::Notice,
                    priority: 1,
                    ttl_s: 3600,
                    title: "例会".into(),
                    text: "9:00".into(),
                    location: None,
                    attachments: vec![],
                },
            }),
        ),
        (
            "alert-send-subtree-police",
            Client(ClientMsg::AlertSend {
                request: 10,
                target: Target::Subtree { node: 4, roles: 3 },
                body: AlertBody {
                    kind: AlertKind::Warning,
                    priority: 2,
                    ttl_s: 1800,
                    title: "大风".into(),
                    text: String::new(),
                    location: None,
                    attachments: vec![],
                },
            }),
        ),
        (
            "alert-send-nearest",
            Client(ClientMsg::AlertSend {
                request: 11,
                target: Target::Nearest {
                    k: 3,
                    radius_m: 2000,
                },
                body: AlertBody {
                    kind: AlertKind::Dispatch,
                    priority: 3,
                    ttl_s: 600,
                    title: "拉车门".into(),
                    text: String::new(),
                    location: Some(Location {
                        lat_e7: 290_800_000,
                        lon_e7: 1_196_400_000,
                        address: String::new(),
                    }),
                    attachments: vec![],
                },
            }),
        ),
        (
            "alert-send-station-report-with-attachment",
            Client(ClientMsg::AlertSend {
                request: 12,
                target: Target::Station,
                body: AlertBody {
                    kind: AlertKind::Report,
                    priority: 0,
                    ttl_s: 86_400,
                    title: "巡查".into(),
                    text: String::new(),
                    location: None,
                    attachments: vec![AttachmentRef {
                        id: 3,
                        size: 0,
                        mime: String::new(),
                    }],
                },
            }),
        ),
        ("alert-query", Client(ClientMsg::AlertQuery { alert: 12 })),
        (
            "position",
            Client(ClientMsg::Position {
                lat_e7: 290_800_000,
                lon_e7: 1_196_400_000,
                accuracy_m: 15,
            }),
        ),
        (
            "watch-positions",
            Client(ClientMsg::WatchPositions { node: 4 }),
        ),
        ("sos", Client(ClientMsg::Sos)),
        ("sos-cancel", Client(ClientMsg::SosCancel { terminal: t })),
        (
            "attachment-fetch",
            Client(ClientMsg::AttachmentFetch { attachment: 3 }),
        ),
        (
            "drill-report-query",
            Client(ClientMsg::DrillReportQuery { alert: 12 }),
        ),
        (
            "alert-with-attachment",
            Server(ServerMsg::Alert {
                alert: 12,
                issuer: TerminalId(300),
                created_ms: 1_700_000_000_000,
                expires_ms: 1_700_000_600_000,
                body: AlertBody {
                    kind: AlertKind::Dispatch,
                    priority: 3,
                    ttl_s: 600,
                    title: "拉车门".into(),
                    text: String::new(),
                    location: None,
                    attachments: vec![AttachmentRef {
                        id: 3,
                        size: 1 << 20,
                        mime: "image/jpeg".into(),
                    }],
                },
            }),
        ),
        (
            "receipt-update-rejected",
            Server(ServerMsg::ReceiptUpdate {
                alert: 12,
                terminal: t,
                status: ReceiptStatus::Rejected,
                at_ms: 1_700_000_042_000,
                reason: "走不开".into(),
            }),
        ),
        (
            "alert-status",
            Server(ServerMsg::AlertStatus {
                alert: 12,
                recipients: 4,
                counts: StatusCounts {
                    by_status: [0, 1, 0, 1, 1, 1, 0],
                    expired: 0,
                },
            }),
        ),
        (
            "alert-refused-target",
            Server(ServerMsg::AlertRefused {
                request: 7,
                code: ErrorCode::TargetNotAllowed,
                message: "outside".into(),
            }),
        ),
        (
            "position-update",
            Server(ServerMsg::PositionUpdate {
                terminal: t,
                lat_e7: 290_800_000,
                lon_e7: 1_196_400_000,
                accuracy_m: 15,
                at_ms: 1_700_000_000_000,
            }),
        ),
        (
            "alert-cancelled",
            Server(ServerMsg::AlertCancelled { alert: 13, by: t }),
        ),
        (
            "attachment-stored",
            Server(ServerMsg::AttachmentStored {
                request: 8,
                attachment: 3,
                size: 1 << 20,
            }),
        ),
        (
            "attachment",
            Server(ServerMsg::Attachment {
                attachment: 3,
                alert: 12,
                mime: "image/jpeg".into(),
                size: 1 << 20,
            }),
        ),
        (
            "drill-report",
            Server(ServerMsg::DrillReport {
                alert: 12,
                size: 2048,
            }),
        ),
        (
            "link-report",
            Client(ClientMsg::LinkReport {
                received: 250,
                lost: 3,
                late: 1,
                jitter_us: 4_200,
            }),
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
        let documented = &doc[name];
        let bytes = &documented.bytes;
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
        assert_eq!(
            documented.decoded,
            render(&vector),
            "{name}: the decoded value the document states"
        );
    }
}

/// The provisioning key of the document's vectors: bytes 00 01 .. 1f.
const TEST_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};

/// The credential derivation as section 2 states it, written here apart
/// from the gateway's implementation (whose own test pins the same output).
fn derive(key: &[u8; 32], terminal: u32) -> [u8; 32] {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"ptt-terminal-credential-v1");
    mac.update(&terminal.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The value after `label =` in the credential vector block of section 2
/// (lines whose value is hex digits and spaces only, which skips the
/// formula).
fn credential_field(label: &str) -> String {
    let section = DOC
        .split("### Credentials")
        .nth(1)
        .expect("credentials section");
    section
        .lines()
        .find_map(|line| {
            let (l, v) = line.trim().split_once('=')?;
            let v = v.trim();
            let hex = v.chars().all(|c| c.is_ascii_hexdigit() || c == ' ');
            (l.trim() == label && hex).then(|| v.to_owned())
        })
        .unwrap_or_else(|| panic!("no `{label} =` line in the credentials section"))
}

#[test]
fn documented_credential_vector_matches_the_derivation() {
    let hex_field = |label| hex::decode(credential_field(label).replace(' ', "")).expect("hex");
    assert_eq!(hex_field("key"), TEST_KEY);
    let terminal: u32 = credential_field("terminal").parse().expect("terminal id");
    let mut message = b"ptt-terminal-credential-v1".to_vec();
    message.extend_from_slice(&terminal.to_be_bytes());
    assert_eq!(hex_field("message"), message);
    assert_eq!(hex_field("credential"), derive(&TEST_KEY, terminal));
}

/// Prints the vector table rows of PROTOCOL.md section 6 from the code.
#[test]
#[ignore = "prints the table for the document; run with --ignored --nocapture"]
fn print_vector_table() {
    for (name, vector) in expected() {
        let mut out = BytesMut::new();
        match &vector {
            Vector::Client(m) => m.encode(&mut out),
            Vector::Server(m) => m.encode(&mut out),
            Vector::Voice(h, opus) => h.encode(opus, &mut out),
        }
        println!(
            "| `{name}` | `{}` | `{}` |",
            spaced_hex(&out),
            render(&vector)
        );
    }
}
