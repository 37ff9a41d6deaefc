//! A voice frame as an RTP packet: the media plane's form of the voice
//! datagram of docs/PROTOCOL.md §4.
//!
//! - Payload type [`PAYLOAD_TYPE`] (Opus, RFC 7587: a 48 kHz RTP clock,
//!   [`TICKS_PER_FRAME`] per 20 ms frame); the M bit on a burst's first
//!   frame.
//! - An RFC 8285 one-byte header extension with one element, id
//!   [`EXTENSION_ID`], of [`ELEMENT_LEN`] bytes: `group u32 | burst u16 |
//!   frame seq u16 | flags u8`, the datagram header's fields but the
//!   speaker.
//! - From the gateway, the speaker as the one CSRC (the gateway stamps it;
//!   a terminal's own CSRC is never trusted, it sends none).
//!
//! The RTP sequence number, timestamp and SSRC belong to the stream the
//! packet travels in (one per terminal and direction), not to the burst.

use std::ops::Range;

use super::rtp::{self, Builder, Element, Header, ONE_BYTE_PROFILE};
use super::{Error, Unprotected};
use crate::voice::{FLAG_END, MAX_OPUS_PACKET};
use crate::{GroupId, VoiceHeader};

/// RTP payload type of voice: Opus, dynamic (RFC 7587).
pub const PAYLOAD_TYPE: u8 = 111;

/// Header extension element id of the voice fields.
pub const EXTENSION_ID: u8 = 1;

/// Bytes of the voice element's data.
pub const ELEMENT_LEN: usize = 9;

/// Opus's RTP clock rate, whatever the audio's sampling rate (RFC 7587 §4.1).
pub const CLOCK_RATE: u32 = 48_000;

/// RTP timestamp ticks in one 20 ms frame.
pub const TICKS_PER_FRAME: u32 = CLOCK_RATE / 50;

/// Bytes of the extension data: the element (1 + 9 bytes) padded to words.
const EXTENSION_DATA_LEN: usize = (1 + ELEMENT_LEN).next_multiple_of(4);

/// Largest RTP header of a voice packet: fixed part, one CSRC, extension.
pub const MAX_HEADER_LEN: usize = rtp::FIXED_LEN + 4 + 4 + EXTENSION_DATA_LEN;

/// Largest plaintext voice RTP packet.
pub const MAX_PACKET: usize = MAX_HEADER_LEN + MAX_OPUS_PACKET;

/// The stream fields of one voice packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtp {
    /// The stream: the SSRC of the terminal's `MediaAnswer`.
    pub ssrc: u32,
    /// The stream's sequence number for this packet.
    pub sequence: u16,
    /// The stream's 48 kHz media clock at this frame's first sample.
    pub timestamp: u32,
}

/// Writes the plaintext RTP packet carrying `opus` with `frame`'s fields to
/// the start of `out`; returns its length. `speaker` is the CSRC (the
/// gateway's downlink); a terminal passes `None`. `frame.speaker` is not
/// written.
///
/// [`Error::Malformed`] for an empty Opus packet or one longer than
/// [`MAX_OPUS_PACKET`], [`Error::BufferTooSmall`] if `out` is too short
/// (protecting needs [`TAG_LEN`](super::TAG_LEN) more after it).
pub fn write(
    frame: &VoiceHeader,
    rtp: Rtp,
    speaker: Option<u32>,
    opus: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    if opus.is_empty() || opus.len() > MAX_OPUS_PACKET {
        return Err(Error::Malformed);
    }
    let mut element = [0u8; ELEMENT_LEN];
    element[..4].copy_from_slice(&frame.group.0.to_be_bytes());
    element[4..6].copy_from_slice(&frame.burst.to_be_bytes());
    element[6..8].copy_from_slice(&frame.seq.to_be_bytes());
    element[8] = frame.flags;
    let mut extension = [0u8; EXTENSION_DATA_LEN];
    let n = rtp::write_one_byte(
        &[Element {
            id: EXTENSION_ID,
            data: &element,
        }],
        &mut extension,
    )?;
    let csrc;
    let csrcs: &[u32] = match speaker {
        Some(s) => {
            csrc = [s];
            &csrc
        }
        None => &[],
    };
    Builder {
        marker: frame.seq == 0,
        payload_type: PAYLOAD_TYPE,
        sequence: rtp.sequence,
        timestamp: rtp.timestamp,
        ssrc: rtp.ssrc,
        csrcs,
        extension: Some((ONE_BYTE_PROFILE, &extension[..n])),
    }
    .write(opus, out)
}

/// Reads the voice fields and the Opus packet of an RTP packet a
/// [`Receiver`](super::Receiver) accepted (`packet` is the decrypted buffer,
/// `unprotected` what `unprotect` returned).
///
/// The speaker is the first CSRC, 0 if there is none. Errors
/// ([`Error::Malformed`]): another payload type, no voice element or one of
/// another length, unknown flags, an empty or too long Opus packet.
pub fn read<'a>(
    unprotected: &Unprotected,
    packet: &'a [u8],
) -> Result<(VoiceHeader, &'a [u8]), Error> {
    let header = &unprotected.header;
    let opus = packet
        .get(unprotected.payload.clone())
        .ok_or(Error::Truncated)?;
    let frame = fields(header, packet)?;
    if opus.is_empty() || opus.len() > MAX_OPUS_PACKET {
        return Err(Error::Malformed);
    }
    Ok((frame, opus))
}

/// The voice fields of a packet with this parsed header.
fn fields(header: &Header, packet: &[u8]) -> Result<VoiceHeader, Error> {
    if header.payload_type != PAYLOAD_TYPE {
        return Err(Error::Malformed);
    }
    let extension = header.extension.as_ref().ok_or(Error::Malformed)?;
    let data = packet
        .get(Range::clone(&extension.data))
        .ok_or(Error::Truncated)?;
    let mut found = None;
    for element in rtp::elements(extension.profile, data) {
        let element = element?;
        if element.id == EXTENSION_ID {
            found = Some(element.data);
            break;
        }
    }
    let e = found.ok_or(Error::Malformed)?;
    if e.len() != ELEMENT_LEN || e[8] & !FLAG_END != 0 {
        return Err(Error::Malformed);
    }
    Ok(VoiceHeader {
        group: GroupId(u32::from_be_bytes([e[0], e[1], e[2], e[3]])),
        speaker: header.csrcs(packet).next().unwrap_or(0),
        burst: u16::from_be_bytes([e[4], e[5]]),
        seq: u16::from_be_bytes([e[6], e[7]]),
        flags: e[8],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::{MasterKeys, Receiver, Role, Sender, SharedSender, TAG_LEN};
    use proptest::prelude::*;

    fn keys() -> MasterKeys {
        MasterKeys::from_exporter(&[9u8; crate::srtp::EXPORTER_LEN]).expect("56 bytes")
    }

    fn frame(seq: u16, flags: u8) -> VoiceHeader {
        VoiceHeader {
            group: GroupId(42),
            speaker: 0,
            burst: 5,
            seq,
            flags,
        }
    }

    #[test]
    fn an_uplink_frame_round_trips_through_srtp() {
        let k = keys();
        let mut terminal = Sender::new(&k.session(Role::Client.sending()), 77);
        let mut gateway = Receiver::new(&k.session(Role::Server.receiving()), 77);
        let mut buf = [0u8; MAX_PACKET + TAG_LEN];
        let rtp = Rtp {
            ssrc: 77,
            sequence: 100,
            timestamp: 960 * 3,
        };
        let len = write(&frame(0, 0), rtp, None, b"opus", &mut buf).unwrap();
        assert!(len <= MAX_HEADER_LEN + 4);
        let len = terminal.protect(&mut buf, len).unwrap();
        let got = gateway.unprotect(&mut buf[..len]).unwrap();
        assert!(got.header.marker, "a burst's first frame is marked");
        let (h, opus) = read(&got, &buf[..len]).unwrap();
        assert_eq!(h, frame(0, 0));
        assert_eq!(opus, b"opus");
    }

    #[test]
    fn a_downlink_frame_carries_the_speaker_and_shared_indices_never_repeat() {
        let k = keys();
        let gateway = SharedSender::new(&k.session(Role::Server.sending()), 77, 40_000);
        let mut terminal = Receiver::new(&k.session(Role::Client.receiving()), 77);
        for i in 0..3u16 {
            let index = gateway.next().unwrap();
            assert_eq!(index, 40_000 - 32_768 + u64::from(i), "first below 32,768");
            let mut buf = [0u8; 128];
            let rtp = Rtp {
                ssrc: 77,
                sequence: SharedSender::sequence_of(index),
                timestamp: 0,
            };
            let len = write(&frame(i, FLAG_END), rtp, Some(1001), b"x", &mut buf).unwrap();
            let len = gateway.seal(index, &mut buf, len).unwrap();
            let got = terminal.unprotect(&mut buf[..len]).unwrap();
            let (h, _) = read(&got, &buf[..len]).unwrap();
            assert_eq!(h.speaker, 1001);
            assert_eq!((h.seq, h.flags), (i, FLAG_END));
        }
        // A header whose sequence number is not the index's is refused.
        let mut buf = [0u8; 128];
        let rtp = Rtp {
            ssrc: 77,
            sequence: 1,
            timestamp: 0,
        };
        let len = write(&frame(0, 0), rtp, None, b"x", &mut buf).unwrap();
        assert_eq!(gateway.seal(2, &mut buf, len), Err(Error::Malformed));
    }

    #[test]
    fn what_is_not_a_voice_packet_is_refused() {
        let k = keys();
        let mut s = Sender::new(&k.session(Role::Client.sending()), 5);
        let mut r = Receiver::new(&k.session(Role::Server.receiving()), 5);
        // No extension, another payload type.
        let mut buf = [0u8; 64];
        let len = Builder {
            marker: false,
            payload_type: 0,
            sequence: 1,
            timestamp: 0,
            ssrc: 5,
            csrcs: &[],
            extension: None,
        }
        .write(b"pcmu", &mut buf)
        .unwrap();
        let len = s.protect(&mut buf, len).unwrap();
        let got = r.unprotect(&mut buf[..len]).unwrap();
        assert_eq!(read(&got, &buf[..len]).unwrap_err(), Error::Malformed);
        // Empty Opus packets and unknown flags are never written.
        let rtp = Rtp {
            ssrc: 5,
            sequence: 2,
            timestamp: 0,
        };
        assert_eq!(
            write(&frame(0, 0), rtp, None, b"", &mut buf),
            Err(Error::Malformed)
        );
    }

    proptest! {
        /// Whatever a peer sends, once it authenticated, `read` answers
        /// without panicking.
        #[test]
        fn read_never_panics(body in prop::collection::vec(any::<u8>(), 12..200)) {
            let k = keys();
            let mut s = Sender::new(&k.session(Role::Client.sending()), 5);
            let mut r = Receiver::new(&k.session(Role::Server.receiving()), 5);
            let mut buf = body.clone();
            buf[0] = (buf[0] & 0x3f) | 0x80;
            buf[8..12].copy_from_slice(&5u32.to_be_bytes());
            buf[2] = 0;
            let len = buf.len();
            buf.resize(len + TAG_LEN, 0);
            if let Ok(n) = s.protect(&mut buf, len) {
                if let Ok(got) = r.unprotect(&mut buf[..n]) {
                    let _ = read(&got, &buf[..n]);
                }
            }
        }
    }
}
