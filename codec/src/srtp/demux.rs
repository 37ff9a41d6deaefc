//! Telling SRTP from QUIC on one UDP port by the first byte (RFC 9443).
//!
//! RFC 9443 §4 (updating RFC 7983) partitions the first byte of a datagram:
//!
//! | first byte | protocol |
//! | --- | --- |
//! | 0-3 | STUN |
//! | 16-19 | ZRTP |
//! | 20-63 | DTLS |
//! | 64-79 | TURN channel, or QUIC (short header) |
//! | 80-127 | QUIC (short header) |
//! | 128-191 | RTP and RTCP (version 2) |
//! | 192-255 | QUIC (long header) |
//!
//! This port runs no STUN, ZRTP, DTLS or TURN, so 64-79 is QUIC and the rest
//! of 0-63 is dropped.
//!
//! The partition only holds if no QUIC packet is sent with its fixed bit
//! (0x40) cleared: both ends must leave the QUIC bit ungreased (RFC 9287;
//! quinn's `EndpointConfig::grease_quic_bit(false)`, which quinn enables by
//! default), or a short-header packet could start with 128-191 and be taken
//! for RTP.

/// What a UDP datagram on the shared port carries, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// A QUIC packet (first byte 64-127: short header, 192-255: long header):
    /// hand it to the QUIC endpoint.
    Quic,
    /// An SRTP or SRTCP packet (first byte 128-191, RTP version 2): hand it to
    /// the media plane, which tells the two apart with [`is_rtcp`].
    Media,
    /// Anything else (empty, or first byte 0-63): drop it.
    Other,
}

/// Classifies one received datagram by its first byte (RFC 9443 §4).
///
/// Call it on every datagram read from the shared port before parsing
/// anything; it looks at one byte and never fails.
pub fn demux(datagram: &[u8]) -> Datagram {
    match datagram.first() {
        Some(64..=127) | Some(192..=255) => Datagram::Quic,
        Some(128..=191) => Datagram::Media,
        _ => Datagram::Other,
    }
}

/// Whether a [`Datagram::Media`] packet is RTCP rather than RTP, by its
/// second byte (RFC 5761 §4: RTCP packet types 192-223 occupy the range in
/// which an RTP marker bit plus payload type 64-95 would fall; those payload
/// types are never used for RTP when RTP and RTCP share a port).
///
/// Call it after [`demux`] said `Media`; a datagram shorter than two bytes is
/// not RTCP.
pub fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet.get(1), Some(192..=223))
}

/// Takes the media packets out of one receive buffer of a socket shared
/// with QUIC, handing each to `media`, and leaves the QUIC packets for the
/// QUIC endpoint: returns the new length of `buf[..len]`.
///
/// With generic receive offload (GRO) one buffer holds several datagrams of
/// the same sender: `stride` bytes each, the last one possibly shorter
/// (quinn-udp's `RecvMeta`). The QUIC ones are moved together so that they
/// keep that layout (each kept datagram but the last is still `stride`
/// long); media and [`Datagram::Other`] ones are removed. A result of 0
/// means nothing is left for QUIC. Call it in the socket's receive path,
/// before QUIC sees the buffer; `stride` 0 is read as one datagram.
pub fn divert(
    buf: &mut [u8],
    len: usize,
    stride: usize,
    mut media: impl FnMut(&mut [u8]),
) -> usize {
    let len = len.min(buf.len());
    let stride = if stride == 0 { len } else { stride };
    if stride == 0 {
        return 0;
    }
    let mut kept = 0;
    let mut at = 0;
    while at < len {
        let end = (at + stride).min(len);
        match demux(&buf[at..end]) {
            Datagram::Quic => {
                // A shorter datagram can only be the buffer's last: what is
                // kept after it keeps the stride.
                if kept != at {
                    buf.copy_within(at..end, kept);
                }
                kept += end - at;
            }
            Datagram::Media => media(&mut buf[at..end]),
            Datagram::Other => {}
        }
        at = end;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_lands_in_its_rfc_9443_range() {
        for byte in 0..=255u8 {
            let expected = match byte {
                0..=63 => Datagram::Other,
                64..=127 => Datagram::Quic,
                128..=191 => Datagram::Media,
                192..=255 => Datagram::Quic,
            };
            assert_eq!(demux(&[byte, 0, 0]), expected, "first byte {byte}");
        }
        assert_eq!(demux(&[]), Datagram::Other);
    }

    #[test]
    fn quic_packets_as_quinn_sends_them_are_quic() {
        // A long-header Initial (0xc0 | type bits) and a short header with the
        // fixed bit set and the key phase / spin bits in any state.
        assert_eq!(demux(&[0xc3, 0, 0, 0, 1]), Datagram::Quic);
        assert_eq!(demux(&[0x40]), Datagram::Quic);
        assert_eq!(demux(&[0x7f]), Datagram::Quic);
        // An RTP packet: V=2, no padding, no extension, no CSRC.
        assert_eq!(demux(&[0x80, 0x60]), Datagram::Media);
        // V=2 with padding, extension and 15 CSRCs is still RTP.
        assert_eq!(demux(&[0xbf, 0x60]), Datagram::Media);
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_the_packet_type() {
        // Sender report (200), receiver report (201), SDES (202), BYE (203).
        for pt in [200u8, 201, 202, 203, 204, 205, 206, 207] {
            assert!(is_rtcp(&[0x80, pt]), "RTCP type {pt}");
        }
        // Opus on dynamic payload type 111, with and without the marker bit.
        assert!(!is_rtcp(&[0x80, 111]));
        assert!(!is_rtcp(&[0x80, 0x80 | 111]));
        assert!(!is_rtcp(&[0x80]));
    }
    #[test]
    fn divert_takes_media_out_of_a_gro_buffer_and_keeps_the_stride() {
        // Four 4-byte datagrams and a 2-byte last one: QUIC, media, QUIC,
        // other, media.
        let mut buf = [
            0x41, 1, 1, 1, 0x80, 2, 2, 2, 0xc3, 3, 3, 3, 0x00, 4, 4, 4, 0x90, 5,
        ];
        let len = buf.len();
        let mut seen = Vec::new();
        let kept = divert(&mut buf, len, 4, |m| seen.push(m.to_vec()));
        assert_eq!(kept, 8);
        assert_eq!(&buf[..8], &[0x41, 1, 1, 1, 0xc3, 3, 3, 3]);
        assert_eq!(seen, vec![vec![0x80, 2, 2, 2], vec![0x90, 5]]);
        // A short QUIC datagram last stays last.
        let mut buf = [0x80, 1, 1, 0x41, 2];
        assert_eq!(divert(&mut buf, 5, 3, |_| {}), 2);
        assert_eq!(&buf[..2], &[0x41, 2]);
        // One datagram, no GRO; an empty buffer; a length past the buffer.
        let mut buf = [0x85, 0];
        let mut n = 0;
        assert_eq!(divert(&mut buf, 2, 0, |_| n += 1), 0);
        assert_eq!(n, 1);
        assert_eq!(divert(&mut [], 0, 0, |_| {}), 0);
        assert_eq!(divert(&mut [0x41], 9, 0, |_| {}), 1);
    }
}
