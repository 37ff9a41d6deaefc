//! Mumble's legacy UDP packet (protocol 1.2-1.4, what murmur 1.3 speaks),
//! the plaintext inside the OCB2 protection: a header byte (type in the
//! top three bits, target in the low five), then for a ping a varint
//! timestamp, for Opus voice the speaker's session (server to client
//! only), a varint sequence number and a varint length whose bit 0x2000
//! marks the last frame of a transmission, then the Opus data (and
//! positional audio, which this client neither sends nor reads).

use super::varint;

/// Packet types (the header's top three bits).
pub const TYPE_PING: u8 = 1;
/// Opus voice.
pub const TYPE_OPUS: u8 = 4;
/// Target 0: talk to the speaker's channel.
pub const TARGET_CHANNEL: u8 = 0;
/// Largest Opus length the 13 length bits can say.
pub const MAX_OPUS: usize = 0x1FFF;
/// The length field's end-of-transmission bit.
const TERMINATOR: u64 = 0x2000;

/// Why a UDP plaintext could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Empty packet.
    #[error("empty packet")]
    Empty,
    /// A codec this client does not speak (CELT, Speex).
    #[error("unsupported packet type {0}")]
    Unsupported(u8),
    /// A varint could not be read.
    #[error("varint: {0}")]
    Varint(#[from] varint::Error),
    /// The session does not fit 32 bits.
    #[error("session out of range")]
    Session,
    /// The Opus length runs past the packet.
    #[error("opus length past the end of the packet")]
    Length,
}

/// A parsed UDP plaintext, borrowing the Opus data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A UDP ping, echoed by the server: what tells a client UDP works.
    Ping {
        /// The sender's timestamp, echoed unchanged.
        timestamp: u64,
    },
    /// One Opus frame.
    Opus {
        /// Header target (0 = channel; from the server, 0 too unless
        /// whispered).
        target: u8,
        /// The speaker's session: present in packets from the server.
        session: Option<u32>,
        /// The speaker's frame sequence number.
        sequence: u64,
        /// Last frame of the transmission.
        last: bool,
        /// The Opus data.
        data: &'a [u8],
    },
}

/// Writes a ping plaintext.
pub fn ping(timestamp: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(TYPE_PING << 5);
    varint::put(timestamp, out);
}

/// Writes an Opus voice plaintext as a client sends it (no session).
/// `data` longer than [`MAX_OPUS`] is a caller bug.
pub fn opus(target: u8, sequence: u64, last: bool, data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(data.len() <= MAX_OPUS);
    out.clear();
    out.push((TYPE_OPUS << 5) | (target & 0x1F));
    varint::put(sequence, out);
    varint::put(data.len() as u64 | if last { TERMINATOR } else { 0 }, out);
    out.extend_from_slice(data);
}

/// Reads a plaintext; `from_server` says whether a session varint follows
/// the header in voice packets.
pub fn parse(packet: &[u8], from_server: bool) -> Result<Packet<'_>, Error> {
    let (&header, mut rest) = packet.split_first().ok_or(Error::Empty)?;
    let kind = header >> 5;
    let mut next = || -> Result<u64, Error> {
        let (v, n) = varint::get(rest)?;
        rest = &rest[n..];
        Ok(v)
    };
    match kind {
        TYPE_PING => Ok(Packet::Ping { timestamp: next()? }),
        TYPE_OPUS => {
            let session = if from_server {
                Some(u32::try_from(next()?).map_err(|_| Error::Session)?)
            } else {
                None
            };
            let sequence = next()?;
            let length = next()?;
            let len = (length & MAX_OPUS as u64) as usize;
            let data = rest.get(..len).ok_or(Error::Length)?;
            Ok(Packet::Opus {
                target: header & 0x1F,
                session,
                sequence,
                last: length & TERMINATOR != 0,
                data,
            })
        }
        other => Err(Error::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut out = Vec::new();
        ping(123_456_789, &mut out);
        assert_eq!(
            parse(&out, true),
            Ok(Packet::Ping {
                timestamp: 123_456_789
            })
        );
        let data = [9u8; 40];
        opus(0, 300, true, &data, &mut out);
        assert_eq!(
            parse(&out, false),
            Ok(Packet::Opus {
                target: 0,
                session: None,
                sequence: 300,
                last: true,
                data: &data
            })
        );
        // The server's form: the session after the header.
        let mut from_server = vec![out[0]];
        varint::put(77, &mut from_server);
        from_server.extend_from_slice(&out[1..]);
        assert_eq!(
            parse(&from_server, true),
            Ok(Packet::Opus {
                target: 0,
                session: Some(77),
                sequence: 300,
                last: true,
                data: &data
            })
        );
    }

    #[test]
    fn hostile_input() {
        assert_eq!(parse(&[], true), Err(Error::Empty));
        assert_eq!(parse(&[2 << 5, 0, 0], true), Err(Error::Unsupported(2)));
        // Length past the end.
        assert_eq!(
            parse(&[TYPE_OPUS << 5, 1, 2, 0x10], true),
            Err(Error::Length)
        );
        // Session wider than 32 bits.
        let mut p = vec![TYPE_OPUS << 5];
        varint::put(1 << 40, &mut p);
        p.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&p, true), Err(Error::Session));
        // Every truncation of a valid packet is an error, never a panic.
        let mut out = Vec::new();
        opus(0, 1 << 30, false, &[1; 60], &mut out);
        for cut in 0..out.len() {
            assert!(parse(&out[..cut], false).is_err(), "cut {cut}");
        }
        // A sweep of pseudo-random packets.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 24];
        for _ in 0..50_000 {
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let len = (x % 25) as usize;
            if let Ok(Packet::Opus { data, .. }) = parse(&buf[..len], x & 1 == 0) {
                assert!(data.len() <= len);
            }
        }
    }
}
