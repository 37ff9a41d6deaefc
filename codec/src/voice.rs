//! Voice datagrams: one Opus packet per QUIC DATAGRAM frame (RFC 9221).
//!
//! ```text
//!  0               1               2               3
//! +-------+-------+---------------+---------------+---------------+
//! |ver=1  | flags |                 group (u32)                    
//! +-------+-------+---------------+---------------+---------------+
//!                 |                speaker (u32)                   
//! +---------------+---------------+---------------+---------------+
//!                 |     burst (u16)               |   seq (u16) ..
//! +---------------+---------------+---------------+---------------+
//!  .. seq         |  Opus packet (1..=1275 bytes) ...
//! ```
//!
//! A terminal sends `speaker = 0`; the gateway overwrites it with the
//! authenticated sender before relaying ([`stamp_speaker`]), so a terminal can
//! only ever speak as itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::reader::Reader;
use crate::{GroupId, Malformed, TerminalId};

/// Version carried in the high nibble of the first byte.
pub const VOICE_VERSION: u8 = 1;

/// Bytes of the voice header before the Opus packet.
pub const VOICE_HEADER_LEN: usize = 13;

/// Largest Opus packet (RFC 6716 §3.2.1).
pub const MAX_OPUS_PACKET: usize = 1275;

/// Largest voice datagram.
pub const MAX_VOICE_DATAGRAM: usize = VOICE_HEADER_LEN + MAX_OPUS_PACKET;

/// Flag: the last frame of a burst (the talker released the key).
pub const FLAG_END: u8 = 0x1;

/// Flags this version defines; others must be zero.
const KNOWN_FLAGS: u8 = FLAG_END;

/// The fixed header of a voice datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceHeader {
    /// Talk group the frame belongs to.
    pub group: GroupId,
    /// Who talks: 0 from a terminal, the authenticated sender from the gateway.
    pub speaker: u32,
    /// Burst id from `FloorGranted`.
    pub burst: u16,
    /// Frame number within the burst, from 0, wrapping.
    pub seq: u16,
    /// Bit set of `FLAG_*`.
    pub flags: u8,
}

impl VoiceHeader {
    /// Appends header and `opus` packet to `out`.
    pub fn encode(&self, opus: &[u8], out: &mut BytesMut) {
        out.reserve(VOICE_HEADER_LEN + opus.len());
        out.put_u8((VOICE_VERSION << 4) | (self.flags & 0x0f));
        out.put_u32(self.group.0);
        out.put_u32(self.speaker);
        out.put_u16(self.burst);
        out.put_u16(self.seq);
        out.put_slice(opus);
    }

    /// Builds a complete datagram.
    pub fn to_datagram(&self, opus: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(VOICE_HEADER_LEN + opus.len());
        self.encode(opus, &mut out);
        out.freeze()
    }

    /// Parses a datagram into its header and the Opus packet.
    pub fn decode(datagram: &[u8]) -> Result<(VoiceHeader, &[u8]), Malformed> {
        if datagram.len() > MAX_VOICE_DATAGRAM {
            return Err(Malformed::TooLong);
        }
        let mut r = Reader::new(datagram);
        let first = r.u8()?;
        if first >> 4 != VOICE_VERSION {
            return Err(Malformed::InvalidValue("voice version"));
        }
        let flags = first & 0x0f;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Malformed::InvalidValue("voice flags"));
        }
        let group = match r.u32()? {
            0 => return Err(Malformed::InvalidValue("group 0")),
            g => GroupId(g),
        };
        let header = VoiceHeader {
            group,
            speaker: r.u32()?,
            burst: r.u16()?,
            seq: r.u16()?,
            flags,
        };
        let opus = &datagram[VOICE_HEADER_LEN..];
        if opus.is_empty() {
            return Err(Malformed::Truncated);
        }
        Ok((header, opus))
    }

    /// Whether this is the last frame of its burst.
    pub fn is_end(&self) -> bool {
        self.flags & FLAG_END != 0
    }
}

/// Copies a datagram already validated by [`VoiceHeader::decode`] with its
/// speaker field set to `speaker`.
///
/// This is the one allocation of the relay path: the result is shared by
/// every receiver of the frame.
pub fn stamp_speaker(datagram: &[u8], speaker: TerminalId) -> Bytes {
    let mut out = BytesMut::from(datagram);
    out[5..9].copy_from_slice(&speaker.0.to_be_bytes());
    out.freeze()
}
