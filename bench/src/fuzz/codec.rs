//! Targets for the wire decoders of `ptt_codec`: control framing, the two
//! directions' control frames (alert bodies and targets inside them), voice
//! datagrams and the fan-out admission that reads their headers.
//!
//! Properties, for every input:
//! - no decoder panics, and every slice it returns lies inside its input;
//! - framing: `Incomplete` exactly when the bytes end before the frame the
//!   header announces, `TooLong` from the header alone, and a strict prefix
//!   of a complete frame is `Incomplete`, never another frame;
//! - bodies: a body that decodes re-encodes to the very same bytes (the
//!   encoding is canonical, so decode, encode, decode is the identity), every
//!   strict prefix of it is `Truncated` (need-more kept apart from
//!   malformed), and one byte more is `TrailingBytes` (`Hello` and
//!   `Welcome`, which end in an optional media field, excepted: there the
//!   prefix without the field is valid, and a zero byte more is refused);
//! - values: `decode(encode(x)) == x` for every valid `x`, built from the
//!   input bytes.

use bytes::BytesMut;
use ptt_codec::control::{kind, split_frame, FrameError, RawFrame, HEADER_LEN, MAX_BODY};
use ptt_codec::control::{MAX_CREDENTIAL, MAX_LIST_GROUPS, MAX_LIST_TERMINALS, MAX_MESSAGE};
use ptt_codec::voice::{stamp_speaker, FLAG_END, MAX_OPUS_PACKET, MAX_VOICE_DATAGRAM};
use ptt_codec::voice::{VOICE_HEADER_LEN, VOICE_VERSION};
use ptt_codec::{alert, control::MAX_NAME};
use ptt_codec::{
    AlertBody, AlertKind, AttachmentRef, Class, ClientMsg, DenyCause, ErrorCode, GroupId, Location,
    Malformed, MediaAnswer, MediaOffer, Membership, ReceiptStatus, RevokeCause, ServerMsg,
    StatusCounts, Target, TerminalId, VoiceHeader,
};
use ptt_gateway_core::fanout;

use crate::input::{mutate, Rng, Source};
use crate::Outcome;

// ---- valid values, built from bytes ----------------------------------------

fn group(s: &mut Source<'_>) -> GroupId {
    GroupId(s.id_u32())
}

fn terminal(s: &mut Source<'_>) -> TerminalId {
    TerminalId(s.id_u32())
}

/// A list length: usually a few, sometimes exactly the limit.
fn count(s: &mut Source<'_>, max: usize) -> usize {
    match s.u8() % 8 {
        7 => max,
        6 => s.below(max + 1),
        _ => s.below(5.min(max + 1)),
    }
}

fn lat(s: &mut Source<'_>) -> i32 {
    match s.u8() % 4 {
        0 => 900_000_000,
        1 => -900_000_000,
        _ => s.range_u32(0, 1_800_000_000) as i32 - 900_000_000,
    }
}

fn lon(s: &mut Source<'_>) -> i32 {
    match s.u8() % 4 {
        0 => 1_800_000_000,
        1 => -1_800_000_000,
        _ => (i64::from(s.range_u32(0, 3_600_000_000)) - 1_800_000_000) as i32,
    }
}

/// Valid coordinates, the poles and the antimeridian often.
pub fn coordinates(s: &mut Source<'_>) -> (i32, i32) {
    (lat(s), lon(s))
}

fn attachment_ref(s: &mut Source<'_>) -> AttachmentRef {
    AttachmentRef {
        id: s.any_u64().max(1),
        size: s.range_u32(0, alert::MAX_ATTACHMENT),
        mime: s.string(alert::MAX_MIME),
    }
}

/// A valid alert body.
pub fn alert_body(s: &mut Source<'_>) -> AlertBody {
    AlertBody {
        kind: s.pick(AlertKind::ALL),
        priority: s.u8() % 4,
        ttl_s: s.u32(),
        title: s.string(alert::MAX_TITLE),
        text: s.string(alert::MAX_TEXT),
        location: s.bool().then(|| Location {
            lat_e7: lat(s),
            lon_e7: lon(s),
            address: s.string(alert::MAX_ADDRESS),
        }),
        attachments: (0..count(s, alert::MAX_ATTACHMENTS))
            .map(|_| attachment_ref(s))
            .collect(),
    }
}

/// A valid alert target.
pub fn target(s: &mut Source<'_>) -> Target {
    match s.u8() % 5 {
        0 => Target::Terminals(
            (0..count(s, alert::MAX_TARGET_TERMINALS - 1) + 1)
                .map(|_| terminal(s))
                .collect(),
        ),
        1 => Target::Group(group(s)),
        2 => Target::Subtree {
            node: s.id_u32(),
            roles: s.u8() & 0x3f,
        },
        3 => Target::Nearest {
            k: s.range_u32(1, u32::from(alert::MAX_NEAREST)) as u16,
            radius_m: s.range_u32(1, alert::MAX_RADIUS_M),
        },
        _ => Target::Station,
    }
}

/// A valid terminal-to-gateway message.
pub fn client_msg(s: &mut Source<'_>) -> ClientMsg {
    match s.u8() % 19 {
        0 => {
            let n = 1 + s.below(MAX_CREDENTIAL);
            ClientMsg::Hello {
                version: s.u8(),
                terminal: terminal(s),
                credential: (0..n).map(|_| s.u8()).collect::<Vec<_>>().into(),
                media: MediaOffer(s.u8() & MediaOffer::SRTP.0),
            }
        }
        1 => ClientMsg::Join { group: group(s) },
        2 => ClientMsg::Leave { group: group(s) },
        3 => ClientMsg::FloorRequest {
            group: group(s),
            class: s.pick(Class::ALL),
        },
        4 => ClientMsg::FloorRelease { group: group(s) },
        5 => ClientMsg::Ping { nonce: s.any_u64() },
        6 => ClientMsg::Logout,
        7 => {
            let request = s.u32();
            let target = target(s);
            ClientMsg::AlertSend {
                request,
                body: alert_body(s),
                target,
            }
        }
        8 => ClientMsg::AlertReceipt {
            alert: s.any_u64(),
            status: s.pick(&ReceiptStatus::ALL[1..]),
            reason: s.string(MAX_MESSAGE),
        },
        9 => ClientMsg::AlertQuery { alert: s.any_u64() },
        10 => ClientMsg::Position {
            lat_e7: lat(s),
            lon_e7: lon(s),
            accuracy_m: s.u16(),
        },
        11 => ClientMsg::WatchPositions { node: s.u32() },
        12 => ClientMsg::Sos,
        13 => ClientMsg::SosCancel {
            terminal: terminal(s),
        },
        14 => ClientMsg::AttachmentPut {
            request: s.u32(),
            mime: {
                let m = s.string(alert::MAX_MIME);
                if m.is_empty() {
                    "image/jpeg".to_owned()
                } else {
                    m
                }
            },
            size: s.u32().max(1),
        },
        15 => ClientMsg::AttachmentFetch {
            attachment: s.any_u64().max(1),
        },
        16 => ClientMsg::DrillReportQuery { alert: s.any_u64() },
        17 => ClientMsg::MediaMode { srtp: s.bool() },
        _ => {
            let received = s.u32();
            ClientMsg::LinkReport {
                received,
                lost: s.u32(),
                late: s.u32().min(received),
                jitter_us: s.u32(),
            }
        }
    }
}

/// A valid gateway-to-terminal message.
pub fn server_msg(s: &mut Source<'_>) -> ServerMsg {
    match s.u8() % 23 {
        0 => ServerMsg::Welcome {
            terminal: terminal(s),
            name: s.string(MAX_NAME),
            resumed: s.bool(),
            groups: (0..count(s, MAX_LIST_GROUPS))
                .map(|_| Membership {
                    group: group(s),
                    talk: s.bool(),
                })
                .collect(),
            media: s.bool().then(|| MediaAnswer {
                ssrc: s.u32().max(1),
            }),
        },
        1 => ServerMsg::Joined {
            group: group(s),
            talk: s.bool(),
            name: s.string(MAX_NAME),
            online: (0..count(s, MAX_LIST_TERMINALS))
                .map(|_| terminal(s))
                .collect(),
        },
        2 => ServerMsg::Left { group: group(s) },
        3 => ServerMsg::FloorGranted {
            group: group(s),
            burst: s.u16(),
            limit_ms: s.u32(),
        },
        4 => ServerMsg::FloorDenied {
            group: group(s),
            cause: s.pick(DenyCause::ALL),
        },
        5 => ServerMsg::FloorQueued {
            group: group(s),
            position: s.u16(),
        },
        6 => ServerMsg::FloorTaken {
            group: group(s),
            speaker: terminal(s),
            burst: s.u16(),
            class: s.pick(Class::ALL),
            name: s.string(MAX_NAME),
        },
        7 => ServerMsg::FloorIdle { group: group(s) },
        8 => ServerMsg::FloorRevoked {
            group: group(s),
            burst: s.u16(),
            cause: s.pick(RevokeCause::ALL),
        },
        9 => ServerMsg::Presence {
            group: group(s),
            terminal: terminal(s),
            online: s.bool(),
        },
        10 => ServerMsg::Error {
            code: s.pick(ErrorCode::ALL),
            frame: s.u8(),
            group: s.bool().then(|| group(s)),
            message: s.string(MAX_MESSAGE),
        },
        11 => ServerMsg::Pong { nonce: s.any_u64() },
        12 => ServerMsg::AlertAccepted {
            request: s.u32(),
            alert: s.any_u64(),
            recipients: s.u32(),
        },
        13 => ServerMsg::Alert {
            alert: s.any_u64(),
            issuer: terminal(s),
            created_ms: s.any_u64(),
            expires_ms: s.any_u64(),
            body: alert_body(s),
        },
        14 => ServerMsg::ReceiptUpdate {
            alert: s.any_u64(),
            terminal: terminal(s),
            status: s.pick(ReceiptStatus::ALL),
            at_ms: s.any_u64(),
            reason: s.string(MAX_MESSAGE),
        },
        15 => ServerMsg::ReceiptSaved {
            alert: s.any_u64(),
            status: s.pick(ReceiptStatus::ALL),
        },
        16 => ServerMsg::AlertStatus {
            alert: s.any_u64(),
            recipients: s.u32(),
            counts: StatusCounts {
                by_status: std::array::from_fn(|_| s.u32()),
                expired: s.u32(),
            },
        },
        17 => ServerMsg::AlertRefused {
            request: s.u32(),
            code: s.pick(ErrorCode::ALL),
            message: s.string(MAX_MESSAGE),
        },
        18 => ServerMsg::AlertCancelled {
            alert: s.any_u64(),
            by: terminal(s),
        },
        19 => ServerMsg::AttachmentStored {
            request: s.u32(),
            attachment: s.any_u64(),
            size: s.u32(),
        },
        20 => ServerMsg::Attachment {
            attachment: s.any_u64(),
            alert: s.any_u64(),
            mime: s.string(alert::MAX_MIME),
            size: s.range_u32(0, alert::MAX_ATTACHMENT),
        },
        21 => ServerMsg::DrillReport {
            alert: s.any_u64(),
            size: s.u32(),
        },
        _ => ServerMsg::PositionUpdate {
            terminal: terminal(s),
            lat_e7: lat(s),
            lon_e7: lon(s),
            accuracy_m: s.u16(),
            at_ms: s.any_u64(),
        },
    }
}

/// An alert-carrying frame: `AlertSend` one way, `Alert` the other.
fn alert_msg(s: &mut Source<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    if s.bool() {
        let request = s.u32();
        let target = target(s);
        ClientMsg::AlertSend {
            request,
            body: alert_body(s),
            target,
        }
        .encode(&mut out);
    } else {
        ServerMsg::Alert {
            alert: s.any_u64(),
            issuer: terminal(s),
            created_ms: s.any_u64(),
            expires_ms: s.any_u64(),
            body: alert_body(s),
        }
        .encode(&mut out);
    }
    out.to_vec()
}

// ---- generators -------------------------------------------------------------

/// A byte string of 1 to 3 encoded frames made by `frame`, mutated the way
/// a buggy or hostile peer would: mostly inside one body with the header's
/// length fixed up (so the body decoder sees it), sometimes anywhere.
fn frames(rng: &mut Rng, frame: fn(&mut Source<'_>) -> Vec<u8>) -> Vec<u8> {
    if rng.chance(1, 16) {
        return rng.blob(512);
    }
    let mut list: Vec<Vec<u8>> = (0..1 + rng.below(3))
        .map(|_| {
            let seed = rng.blob(700);
            frame(&mut Source::new(&seed))
        })
        .collect();
    let victim = rng.below(list.len());
    let f = &mut list[victim];
    match rng.below(8) {
        // Untouched: valid frames must decode and round-trip.
        0 => {}
        1..=4 => {
            let mut body = f.split_off(HEADER_LEN);
            mutate(rng, &mut body, 4);
            body.truncate(MAX_BODY);
            f[1..3].copy_from_slice(&(body.len() as u16).to_be_bytes());
            f.extend_from_slice(&body);
        }
        5 => {
            // Another frame type's decoder on this body.
            f[0] = if rng.chance(1, 2) {
                f[0] ^ 0x40
            } else {
                rng.next_u64() as u8
            };
        }
        _ => {
            let mut all: Vec<u8> = list.concat();
            mutate(rng, &mut all, 8);
            return all;
        }
    }
    list.concat()
}

fn encoded_client(s: &mut Source<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    client_msg(s).encode(&mut out);
    out.to_vec()
}

fn encoded_server(s: &mut Source<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    server_msg(s).encode(&mut out);
    out.to_vec()
}

fn encoded_any(s: &mut Source<'_>) -> Vec<u8> {
    if s.bool() {
        encoded_client(s)
    } else {
        encoded_server(s)
    }
}

/// Generator of the `frame` target.
pub fn gen_frame(rng: &mut Rng) -> Vec<u8> {
    frames(rng, encoded_any)
}

/// Generator of the `client` target.
pub fn gen_client(rng: &mut Rng) -> Vec<u8> {
    frames(rng, encoded_client)
}

/// Generator of the `server` target.
pub fn gen_server(rng: &mut Rng) -> Vec<u8> {
    frames(rng, encoded_server)
}

/// Generator of the `alert` target.
pub fn gen_alert(rng: &mut Rng) -> Vec<u8> {
    frames(rng, alert_msg)
}

// ---- checks -----------------------------------------------------------------

/// Whether `inner` lies inside `outer` (both slices of the same buffer).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    o.start <= i.start && i.end <= o.end
}

/// Framing: cuts every frame off `input` in turn and checks each cut.
/// Returns the complete frames (slices of `input`) and how the walk ended.
fn walk(input: &[u8]) -> Result<(Vec<RawFrame<'_>>, Outcome), String> {
    let mut at = 0;
    let mut frames = Vec::new();
    loop {
        let rest = &input[at..];
        match split_frame(rest) {
            Ok(f) => {
                ensure!(within(rest, f.body), "frame body outside the input");
                ensure!(f.len() <= rest.len(), "frame longer than its input");
                ensure!(
                    f.kind == rest[0] && f.body == &rest[HEADER_LEN..f.len()],
                    "frame differs from its bytes"
                );
                let announced = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
                ensure!(f.body.len() == announced, "body length differs from header");
                for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, f.len() - 1] {
                    if cut < f.len() {
                        ensure!(
                            split_frame(&rest[..cut]) == Err(FrameError::Incomplete),
                            "prefix of {cut} bytes of a {}-byte frame is not Incomplete",
                            f.len()
                        );
                    }
                }
                ensure!(
                    split_frame(&rest[..f.len()]) == Ok(f),
                    "the frame alone splits differently"
                );
                at += f.len();
                frames.push(f);
            }
            Err(FrameError::Incomplete) => {
                if rest.len() >= HEADER_LEN {
                    let n = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
                    ensure!(
                        n <= MAX_BODY && rest.len() < HEADER_LEN + n,
                        "Incomplete with the whole frame of {n} bytes buffered"
                    );
                }
                let end = if rest.is_empty() {
                    "empty"
                } else {
                    "incomplete"
                };
                return Ok((frames, end));
            }
            Err(FrameError::TooLong(n)) => {
                ensure!(rest.len() >= HEADER_LEN, "TooLong without a header");
                ensure!(
                    n > MAX_BODY && n == usize::from(u16::from_be_bytes([rest[1], rest[2]])),
                    "TooLong({n}) disagrees with the header"
                );
                ensure!(
                    split_frame(&rest[..HEADER_LEN]) == Err(FrameError::TooLong(n)),
                    "TooLong is not decided by the header alone"
                );
                return Ok((frames, "too long"));
            }
        }
    }
}

/// Prefix lengths of a body worth decoding: all of a short one, the ends
/// and a spread of a long one.
fn prefixes(len: usize) -> Vec<usize> {
    if len <= 48 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..8).chain(len - 8..len).collect();
    v.extend((1..8).map(|i| len * i / 8));
    v
}

/// Body properties of one frame under one direction's decoder. Returns
/// whether it decoded.
fn body<M: PartialEq + std::fmt::Debug>(
    f: RawFrame<'_>,
    decode: fn(RawFrame<'_>) -> Result<M, Malformed>,
    encode: fn(&M, &mut BytesMut),
) -> Result<bool, String> {
    match decode(f) {
        Ok(m) => {
            let mut out = BytesMut::new();
            encode(&m, &mut out);
            ensure!(
                out[0] == f.kind && &out[HEADER_LEN..] == f.body,
                "decoded {m:?} re-encodes to other bytes: {}",
                hex(&out)
            );
            // `Hello` and `Welcome` end in an optional field (the media
            // offer and answer, docs/PROTOCOL.md section 8): a prefix that
            // stops where the option starts is a valid frame without it,
            // and a byte more may be the start of one. Elsewhere the rule
            // is strict.
            let optional_tail = f.kind == kind::HELLO || f.kind == kind::WELCOME;
            for n in prefixes(f.body.len()) {
                let cut = RawFrame {
                    kind: f.kind,
                    body: &f.body[..n],
                };
                let got = decode(cut);
                ensure!(
                    got == Err(Malformed::Truncated) || (optional_tail && got.is_ok()),
                    "a {n}-byte prefix of a valid {}-byte body gives {got:?}, not Truncated",
                    f.body.len()
                );
            }
            let mut longer = f.body.to_vec();
            longer.push(0);
            let got = decode(RawFrame {
                kind: f.kind,
                body: &longer,
            });
            ensure!(
                got == Err(Malformed::TrailingBytes) || (optional_tail && got.is_err()),
                "a valid body with one byte more gives {got:?}, not TrailingBytes"
            );
            Ok(true)
        }
        Err(Malformed::UnknownType(k)) => {
            ensure!(k == f.kind, "UnknownType({k}) for frame type {}", f.kind);
            Ok(false)
        }
        Err(_) => Ok(false),
    }
}

/// The body properties of one direction: [`body`] with its decoder.
type BodyCheck = fn(RawFrame<'_>) -> Result<bool, String>;

pub fn client_body(f: RawFrame<'_>) -> Result<bool, String> {
    body(f, ClientMsg::decode, ClientMsg::encode)
}

pub fn server_body(f: RawFrame<'_>) -> Result<bool, String> {
    body(f, ServerMsg::decode, ServerMsg::encode)
}

/// `decode(encode(x)) == x` for a message built from `input`.
fn round_trip<M: PartialEq + std::fmt::Debug>(
    m: M,
    encode: fn(&M, &mut BytesMut),
    decode: fn(RawFrame<'_>) -> Result<M, Malformed>,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    encode(&m, &mut out);
    let f = split_frame(&out).map_err(|e| format!("encoded {m:?} does not split: {e}"))?;
    ensure!(f.len() == out.len(), "encoded {m:?} is not one frame");
    let back = decode(f).map_err(|e| format!("encoded {m:?} does not decode: {e}"))?;
    ensure!(back == m, "{m:?} decodes as {back:?}");
    Ok(())
}

/// Walks the frames of `input`, decodes each body with `decoders`, and
/// names the outcome of the first frame.
fn control(input: &[u8], decoders: &[BodyCheck]) -> Result<Outcome, String> {
    let (frames, end) = walk(input)?;
    let mut first = None;
    for f in &frames {
        let mut ok = false;
        for d in decoders {
            ok |= d(*f)?;
        }
        first.get_or_insert(if ok { "decoded" } else { "malformed" });
    }
    Ok(first.unwrap_or(end))
}

/// Check of the `frame` target: framing, and both decoders on every frame.
pub fn check_frame(input: &[u8]) -> Result<Outcome, String> {
    control(input, &[client_body, server_body])
}

/// Check of the `client` target.
pub fn check_client(input: &[u8]) -> Result<Outcome, String> {
    let outcome = control(input, &[client_body])?;
    round_trip(
        client_msg(&mut Source::new(input)),
        ClientMsg::encode,
        ClientMsg::decode,
    )?;
    Ok(outcome)
}

/// Check of the `server` target (a terminal decodes these).
pub fn check_server(input: &[u8]) -> Result<Outcome, String> {
    let outcome = control(input, &[server_body])?;
    round_trip(
        server_msg(&mut Source::new(input)),
        ServerMsg::encode,
        ServerMsg::decode,
    )?;
    Ok(outcome)
}

/// Check of the `alert` target: alert bodies and targets, both directions.
pub fn check_alert(input: &[u8]) -> Result<Outcome, String> {
    let outcome = control(input, &[client_body, server_body])?;
    let mut s = Source::new(input);
    let (body, target) = (alert_body(&mut s), target(&mut s));
    round_trip(
        ClientMsg::AlertSend {
            request: 7,
            body: body.clone(),
            target,
        },
        ClientMsg::encode,
        ClientMsg::decode,
    )?;
    round_trip(
        ServerMsg::Alert {
            alert: 1,
            issuer: TerminalId(2),
            created_ms: 3,
            expires_ms: 4,
            body,
        },
        ServerMsg::encode,
        ServerMsg::decode,
    )
    .map(|()| outcome)
}

// ---- voice ------------------------------------------------------------------

fn voice_value(s: &mut Source<'_>) -> (VoiceHeader, Vec<u8>) {
    let header = VoiceHeader {
        group: group(s),
        speaker: s.u32(),
        burst: s.u16(),
        seq: s.u16(),
        flags: if s.bool() { FLAG_END } else { 0 },
    };
    let n = match s.u8() % 4 {
        0 => MAX_OPUS_PACKET,
        1 => 1,
        _ => 1 + s.below(MAX_OPUS_PACKET),
    };
    let opus = (0..n).map(|_| s.u8()).collect();
    (header, opus)
}

/// Generator of the `voice` target: datagrams as a terminal sends them,
/// mutated.
pub fn gen_voice(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(1, 16) {
        return rng.blob(MAX_VOICE_DATAGRAM + 16);
    }
    let seed = rng.blob(64);
    let (h, opus) = voice_value(&mut Source::new(&seed));
    let mut d = h.to_datagram(&opus).to_vec();
    if rng.chance(3, 4) {
        mutate(rng, &mut d, 3);
    }
    d
}

/// Check of the `voice` target: the datagram decoder, the speaker stamp
/// the relay applies to every admitted frame, and fan-out admission.
pub fn check_voice(input: &[u8]) -> Result<Outcome, String> {
    let outcome = match VoiceHeader::decode(input) {
        Ok((h, opus)) => {
            ensure!(within(input, opus), "Opus packet outside the datagram");
            ensure!(
                opus.as_ptr() == input[VOICE_HEADER_LEN..].as_ptr()
                    && opus.len() == input.len() - VOICE_HEADER_LEN,
                "Opus packet is not the rest of the datagram"
            );
            ensure!(
                !opus.is_empty() && opus.len() <= MAX_OPUS_PACKET,
                "Opus packet of {} bytes accepted",
                opus.len()
            );
            ensure!(h.group.0 != 0, "group 0 accepted");
            ensure!(
                input[0] >> 4 == VOICE_VERSION,
                "voice version {} accepted",
                input[0] >> 4
            );
            ensure!(
                h.to_datagram(opus).as_ref() == input,
                "{h:?} re-encodes to other bytes"
            );
            // The Opus packet runs to the end: a cut inside the header is
            // Truncated, a cut after it is the same header, shorter packet.
            for n in 0..input.len() {
                let got = VoiceHeader::decode(&input[..n]);
                if n <= VOICE_HEADER_LEN {
                    ensure!(
                        got.map(|_| ()) == Err(Malformed::Truncated),
                        "a {n}-byte prefix of a valid datagram gives {got:?}, not Truncated"
                    );
                } else {
                    ensure!(
                        got.is_ok_and(|(h2, o)| h2 == h && o == &opus[..n - VOICE_HEADER_LEN]),
                        "a {n}-byte prefix of a valid datagram gives {got:?}"
                    );
                }
            }
            let mut s = Source::new(input);
            let speaker = terminal(&mut s);
            let stamped = stamp_speaker(input, speaker);
            let (h2, opus2) = VoiceHeader::decode(&stamped)
                .map_err(|e| format!("stamped datagram does not decode: {e}"))?;
            ensure!(
                h2 == VoiceHeader {
                    speaker: speaker.0,
                    ..h
                } && opus2 == opus,
                "stamping the speaker changed more than the speaker"
            );
            // Fan-out admission: only the holder, with its burst.
            let talker = s.bool().then(|| fanout::Talker {
                terminal: terminal(&mut s),
                burst: if s.bool() { h.burst } else { s.u16() },
            });
            let admitted = fanout::admit(talker, speaker, &h).is_ok();
            let holder = talker.is_some_and(|t| t.terminal == speaker && t.burst == h.burst);
            ensure!(
                admitted == holder,
                "admit({talker:?}, {speaker}, burst {}) = {admitted}",
                h.burst
            );
            "decoded"
        }
        Err(e) => {
            if input.len() > MAX_VOICE_DATAGRAM {
                ensure!(e == Malformed::TooLong, "oversized datagram gives {e:?}");
            }
            if input.len() < VOICE_HEADER_LEN + 1 && e != Malformed::Truncated {
                // Only a bad first byte or group may be reported before
                // the end is reached.
                ensure!(
                    matches!(e, Malformed::InvalidValue(_)),
                    "short datagram gives {e:?}"
                );
            }
            "malformed"
        }
    };
    let (h, opus) = voice_value(&mut Source::new(input));
    let d = h.to_datagram(&opus);
    let back = VoiceHeader::decode(&d).map_err(|e| format!("{h:?} does not decode: {e}"))?;
    ensure!(back == (h, &opus[..]), "{h:?} decodes as {:?}", back.0);
    Ok(outcome)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
