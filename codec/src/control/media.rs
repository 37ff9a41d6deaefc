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
    /// are kept but mean nothing here (a later terminal may offer more),
    /// so the frame re-encodes to the same bytes; an explicit empty offer
    /// byte is refused: an encoder never writes it.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<MediaOffer, Malformed> {
        if r.is_empty() {
            return Ok(Self::NONE);
        }
        match r.u8()? {
            0 => Err(Malformed::InvalidValue("empty media offer")),
            bits => Ok(MediaOffer(bits)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(bytes: &[u8]) -> Result<MediaOffer, Malformed> {
        let mut r = Reader::new(bytes);
        let got = MediaOffer::decode(&mut r)?;
        r.finish()?;
        Ok(got)
    }

    fn answer(bytes: &[u8]) -> Result<Option<MediaAnswer>, Malformed> {
        let mut r = Reader::new(bytes);
        let got = MediaAnswer::decode(&mut r)?;
        r.finish()?;
        Ok(got)
    }

    #[test]
    fn offers_absent_known_unknown_and_empty() {
        assert_eq!(offer(&[]), Ok(MediaOffer::NONE));
        assert!(offer(&[1]).unwrap().srtp());
        // A later terminal's bit: kept (the frame re-encodes the same), no SRTP.
        let later = offer(&[0x82]).unwrap();
        assert!(!later.srtp());
        let mut out = Vec::new();
        later.encode(&mut out);
        assert_eq!(out, [0x82]);
        assert!(offer(&[0]).is_err(), "an empty offer byte is never written");
        assert_eq!(offer(&[1, 1]), Err(Malformed::TrailingBytes));
    }

    #[test]
    fn answers_absent_srtp_and_hostile() {
        assert_eq!(answer(&[]), Ok(None));
        assert_eq!(
            answer(&[1, 0xde, 0xad, 0xbe, 0xef]),
            Ok(Some(MediaAnswer { ssrc: 0xdead_beef }))
        );
        for n in 1..5 {
            assert_eq!(
                answer(&[1, 0xde, 0xad, 0xbe, 0xef][..n]),
                Err(Malformed::Truncated)
            );
        }
        assert!(answer(&[1, 0, 0, 0, 0]).is_err(), "SSRC 0");
        assert!(answer(&[2, 0, 0, 0, 9]).is_err(), "an unknown form");
        assert_eq!(answer(&[1, 0, 0, 0, 9, 0]), Err(Malformed::TrailingBytes));
    }
}
