//! The `limits` target: every bounded field and value of the protocol,
//! laid out by hand from PROTOCOL.md (not with the codec's encoders, which
//! clamp) at, just under and just over its bound. Mutation rarely grows a
//! field by exactly one with everything after it still valid; this does it
//! on purpose.

use ptt_codec::alert;
use ptt_codec::control::MAX_MESSAGE;
use ptt_codec::control::{kind, RawFrame, MAX_CREDENTIAL, MAX_LIST_GROUPS, MAX_LIST_TERMINALS};
use ptt_codec::voice::{FLAG_END, MAX_OPUS_PACKET, VOICE_VERSION};
use ptt_codec::{AlertKind, Class, ClientMsg, ErrorCode, Malformed, ServerMsg, VoiceHeader};

use crate::codec::{client_body, coordinates, server_body};
use crate::input::Source;
use crate::Outcome;

/// A UTF-8 string of exactly `n` bytes, multi-byte characters mixed in.
fn string_of(s: &mut Source<'_>, n: usize) -> Vec<u8> {
    let c = s.pick(&['a', 'é', '张', '😀']);
    let mut out = String::with_capacity(n);
    while out.len() + c.len_utf8() <= n {
        out.push(c);
    }
    while out.len() < n {
        out.push('x');
    }
    out.into_bytes()
}

fn put_str(b: &mut Vec<u8>, bytes: &[u8]) {
    b.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    b.extend_from_slice(bytes);
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

/// A body of an `AlertSend` with each bounded field at its given size or
/// value; the rest valid.
struct AlertSizes {
    /// Terminals listed, or with `nearest`, k and the radius instead.
    targets: usize,
    nearest: Option<(usize, usize)>,
    priority: usize,
    attachment_size: usize,
    title: usize,
    text: usize,
    address: usize,
    attachments: usize,
    mime: usize,
}

fn alert_send_body(s: &mut Source<'_>, z: &AlertSizes) -> Vec<u8> {
    let mut b = Vec::new();
    put_u32(&mut b, s.u32());
    if let Some((k, radius)) = z.nearest {
        b.push(4);
        b.extend_from_slice(&(k as u16).to_be_bytes());
        put_u32(&mut b, radius as u32);
    } else {
        b.push(1);
        b.extend_from_slice(&(z.targets as u16).to_be_bytes());
        for _ in 0..z.targets {
            put_u32(&mut b, s.id_u32());
        }
    }
    b.push(s.pick(AlertKind::ALL).code());
    b.push(z.priority as u8);
    put_u32(&mut b, s.u32());
    put_str(&mut b, &string_of(s, z.title));
    put_str(&mut b, &string_of(s, z.text));
    b.push(1);
    let (lat, lon) = coordinates(s);
    put_u32(&mut b, lat as u32);
    put_u32(&mut b, lon as u32);
    put_str(&mut b, &string_of(s, z.address));
    b.push(z.attachments as u8);
    for _ in 0..z.attachments {
        b.extend_from_slice(&s.any_u64().max(1).to_be_bytes());
        put_u32(&mut b, z.attachment_size as u32);
        put_str(&mut b, &string_of(s, z.mime));
    }
    b
}

/// Check of the `limits` target: every bounded field of the protocol, laid
/// out by hand from PROTOCOL.md at, just under and over its bound, with
/// the other fields valid. Within the bound it decodes (and re-encodes to
/// the same bytes); over it, it is refused as malformed, never truncated.
pub fn check_limits(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let field = s.below(19);
    let (min, max) = match field {
        0 => (1, MAX_CREDENTIAL),
        1 | 11 => (0, MAX_MESSAGE),
        2 => (1, alert::MAX_MIME),
        3 => (1, alert::MAX_TARGET_TERMINALS),
        4 | 12 => (0, alert::MAX_TITLE),
        5 => (0, alert::MAX_TEXT),
        6 => (0, alert::MAX_ADDRESS),
        7 => (0, alert::MAX_ATTACHMENTS),
        8 => (0, alert::MAX_MIME),
        9 => (0, MAX_LIST_GROUPS),
        10 => (0, MAX_LIST_TERMINALS),
        13 => (1, MAX_OPUS_PACKET),
        // Values rather than sizes.
        14 | 15 => (0, alert::MAX_ATTACHMENT as usize),
        16 => (1, usize::from(alert::MAX_NEAREST)),
        17 => (1, alert::MAX_RADIUS_M as usize),
        _ => (0, 3),
    };
    let n = match s.u8() % 6 {
        0 => min,
        1 => max,
        2 => max + 1,
        3 => min.saturating_sub(1),
        4 => max + 1 + s.below(64),
        _ => s.below(max + 2),
    };
    let mut b = Vec::new();
    let small = AlertSizes {
        targets: 1,
        nearest: None,
        priority: 2,
        attachment_size: 100,
        title: 4,
        text: 4,
        address: 4,
        attachments: 1,
        mime: 4,
    };
    let (kind, client) = match field {
        0 => {
            b.push(1);
            put_u32(&mut b, s.id_u32());
            b.push(n as u8);
            b.extend((0..n).map(|_| s.u8()));
            (kind::HELLO, true)
        }
        1 => {
            b.extend_from_slice(&s.u64().to_be_bytes());
            b.push(1 + s.u8() % 6);
            put_str(&mut b, &string_of(&mut s, n));
            (kind::ALERT_RECEIPT, true)
        }
        2 => {
            put_u32(&mut b, s.u32());
            put_str(&mut b, &string_of(&mut s, n));
            put_u32(&mut b, s.u32().max(1));
            (kind::ATTACHMENT_PUT, true)
        }
        3..=8 | 15..=18 => {
            let z = match field {
                15 => AlertSizes {
                    attachment_size: n,
                    ..small
                },
                16 => AlertSizes {
                    nearest: Some((n, 500)),
                    ..small
                },
                17 => AlertSizes {
                    nearest: Some((7, n)),
                    ..small
                },
                18 => AlertSizes {
                    priority: n,
                    ..small
                },
                3 => AlertSizes {
                    targets: n,
                    ..small
                },
                4 => AlertSizes { title: n, ..small },
                5 => AlertSizes { text: n, ..small },
                6 => AlertSizes {
                    address: n,
                    ..small
                },
                7 => AlertSizes {
                    attachments: n,
                    ..small
                },
                _ => AlertSizes { mime: n, ..small },
            };
            b = alert_send_body(&mut s, &z);
            (kind::ALERT_SEND, true)
        }
        9 => {
            put_u32(&mut b, s.id_u32());
            put_str(&mut b, b"name");
            b.push(1);
            b.extend_from_slice(&(n as u16).to_be_bytes());
            for _ in 0..n {
                put_u32(&mut b, s.id_u32());
                b.push(s.u8() & 1);
            }
            (kind::WELCOME, false)
        }
        10 => {
            put_u32(&mut b, s.id_u32());
            b.push(1);
            put_str(&mut b, b"unit");
            b.extend_from_slice(&(n as u16).to_be_bytes());
            for _ in 0..n {
                put_u32(&mut b, s.id_u32());
            }
            (kind::JOINED, false)
        }
        11 => {
            b.extend_from_slice(&s.pick(ErrorCode::ALL).code().to_be_bytes());
            b.push(s.u8());
            put_u32(&mut b, s.u32());
            put_str(&mut b, &string_of(&mut s, n));
            (kind::ERROR, false)
        }
        12 => {
            put_u32(&mut b, s.id_u32());
            put_u32(&mut b, s.id_u32());
            b.extend_from_slice(&s.u16().to_be_bytes());
            b.push(s.pick(Class::ALL).code());
            put_str(&mut b, &string_of(&mut s, n));
            (kind::FLOOR_TAKEN, false)
        }
        14 => {
            b.extend_from_slice(&s.u64().to_be_bytes());
            b.extend_from_slice(&s.u64().to_be_bytes());
            put_str(&mut b, b"image/jpeg");
            put_u32(&mut b, n as u32);
            (kind::ATTACHMENT, false)
        }
        _ => {
            // A voice datagram with an Opus packet of n bytes.
            b.push((VOICE_VERSION << 4) | (s.u8() & FLAG_END));
            put_u32(&mut b, s.id_u32());
            put_u32(&mut b, s.u32());
            put_u32(&mut b, s.u32());
            b.extend((0..n).map(|_| s.u8()));
            let within = (min..=max).contains(&n);
            let got = VoiceHeader::decode(&b).map(|_| ());
            let fine = match n {
                // No packet at all: the datagram ends at its header.
                0 => got == Err(Malformed::Truncated),
                _ => got.is_ok() == within && got != Err(Malformed::Truncated),
            };
            ensure!(fine, "Opus packet of {n} bytes (bound {max}) gives {got:?}");
            return Ok(if within { "within" } else { "over" });
        }
    };
    let f = RawFrame { kind, body: &b };
    let within = (min..=max).contains(&n);
    let decoded = if client {
        client_body(f)?
    } else {
        server_body(f)?
    };
    let got = if client {
        ClientMsg::decode(f).map(|_| ())
    } else {
        ServerMsg::decode(f).map(|_| ())
    };
    ensure!(
        decoded == within && got != Err(Malformed::Truncated),
        "field {field} of {n} (bounds {min}..={max}) gives {got:?}"
    );
    Ok(if within { "within" } else { "over" })
}
