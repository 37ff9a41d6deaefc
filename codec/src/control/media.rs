//! How a terminal and the gateway agree on the voice media plane: the offer
//! a terminal makes in `Hello` and the answer in `Welcome` (docs/PROTOCOL.md,
//! "Media plane: SRTP").

use bytes::BufMut;

use crate::reader::Reader;
use crate::Malformed;

/// The media forms a terminal offers in `Hello`, as a bit set. QUIC DATAGRAM
/// voice (PROTOCOL.md §4) needs no offer: every terminal can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaOffer(pub u8);

impl MediaOffer {
    /// Nothing beyond QUIC DATAGRAM voice.
    pub const NONE: MediaOffer = MediaOffer(0);
    /// SRTP with AEAD_AES_128_GCM on the QUIC port, keyed from the TLS
    /// exporter.
    pub const SRTP: MediaOffer = MediaOffer(0x01);

    /// Whether SRTP is offered.
    pub fn srtp(self) -> bool {
        self.0 & Self::SRTP.0 != 0
    }

    /// Writes the offer as `Hello`'s optional last byte: nothing when empty,
    /// so a terminal that offers nothing sends the Hello of before.
    pub(crate) fn encode(self, b: &mut impl BufMut) {
        if self != Self::NONE {
            b.put_u8(self.0);
        }
    }

    /// Reads `Hello`'s optional last byte. Bits this version does not know
    /// are ignored (a later terminal may offer more), but an explicit empty
    /// offer byte is refused: an encoder never writes it.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<MediaOffer, Malformed> {
        if r.is_empty() {
            return Ok(Self::NONE);
        }
        match r.u8()? {
            0 => Err(Malformed::InvalidValue("empty media offer")),
            bits => Ok(MediaOffer(bits & Self::SRTP.0)),
        }
    }
}

/// The gateway's answer to an SRTP offer, in `Welcome`: SRTP is on, with
/// this SSRC for both directions (the keys differ per direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaAnswer {
    /// The terminal's SSRC: its uplink packets carry it, and so do the
    /// gateway's downlink packets to it. Never 0.
    pub ssrc: u32,
}

/// The form code of SRTP in `Welcome`'s answer.
const ANSWER_SRTP: u8 = 0x01;

impl MediaAnswer {
    /// Writes `Welcome`'s optional tail: `01 || ssrc`, or nothing.
    pub(crate) fn encode(answer: Option<MediaAnswer>, b: &mut impl BufMut) {
        if let Some(a) = answer {
            b.put_u8(ANSWER_SRTP);
            b.put_u32(a.ssrc);
        }
    }

    /// Reads `Welcome`'s optional tail.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Option<MediaAnswer>, Malformed> {
        if r.is_empty() {
            return Ok(None);
        }
        if r.u8()? != ANSWER_SRTP {
            return Err(Malformed::InvalidValue("media answer form"));
        }
        match r.u32()? {
            0 => Err(Malformed::InvalidValue("ssrc 0")),
            ssrc => Ok(Some(MediaAnswer { ssrc })),
        }
    }
}
