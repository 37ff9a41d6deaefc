//! The voice media plane's packet protection: SRTP and SRTCP with
//! AEAD_AES_128_GCM (RFC 7714) on the gateway's QUIC port, keyed from the
//! QUIC session's TLS exporter. Sans-I/O, shared by the gateway and the
//! terminal library; `docs/PROTOCOL.md` ("Media plane: SRTP") specifies it
//! for vendors.
//!
//! The parts, in the order a received datagram meets them:
//!
//! - [`demux`]: QUIC or media, by the first byte (RFC 9443); then
//!   [`is_rtcp`]: RTP or RTCP, by the second (RFC 5761).
//! - [`keys`]: the 56 exporter bytes cut into per-direction master keys and
//!   salts as DTLS-SRTP does (RFC 5764 §4.2), then the SRTP key derivation
//!   (RFC 3711 §4.3.1) to the session keys of SRTP and SRTCP.
//! - [`rtp`]: the RTP header (RFC 3550) and its extension (RFC 8285), parsed
//!   without ever reading past the packet.
//! - [`Sender`] / [`Receiver`]: one SSRC's stream in one direction, with the
//!   rollover counter (RFC 3711 §3.3.1) and the replay windows
//!   ([`replay`], RFC 3711 §3.3.2), over the AEAD of RFC 7714 §8 (SRTP) and
//!   §9 (SRTCP).
//! - [`rtcp`]: receiver reports (RFC 3550 §6.4.2) and the reception
//!   statistics they carry (loss, extended highest sequence, jitter).
//!
//! Everything works in place on the caller's buffer: no allocation per
//! packet. Every failure is one [`Error`] variant; none panics, whatever the
//! input.
//!
//! ```
//! use ptt_codec::srtp::{self, rtp, MasterKeys, Receiver, Role, Sender, TAG_LEN};
//!
//! // Both ends call quinn's `Connection::export_keying_material(&mut out,
//! // srtp::EXPORTER_LABEL, srtp::EXPORTER_CONTEXT)` and get the same bytes.
//! let exported = [7u8; srtp::EXPORTER_LEN];
//! let keys = MasterKeys::from_exporter(&exported).expect("56 bytes");
//! let mut terminal = Sender::new(&keys.session(Role::Client.sending()), 0x1234_5678);
//! let mut gateway = Receiver::new(&keys.session(Role::Server.receiving()), 0x1234_5678);
//!
//! let mut buf = [0u8; 128];
//! let header = rtp::Builder {
//!     marker: true,
//!     payload_type: 111,
//!     sequence: 1,
//!     timestamp: 960,
//!     ssrc: 0x1234_5678,
//!     csrcs: &[],
//!     extension: None,
//! };
//! let len = header.write(b"opus frame", &mut buf).expect("room");
//! let len = terminal.protect(&mut buf, len).expect("protected");
//! assert_eq!(srtp::demux(&buf[..len]), srtp::Datagram::Media);
//! let wire = buf;
//!
//! let packet = gateway.unprotect(&mut buf[..len]).expect("authentic");
//! assert_eq!(&buf[packet.payload], b"opus frame");
//!
//! // The same datagram again is refused.
//! let mut replay = wire;
//! assert_eq!(gateway.unprotect(&mut replay[..len]), Err(srtp::Error::Replayed));
//! ```

mod aead;
mod demux;
pub mod keys;
pub mod replay;
pub mod rtcp;
pub mod rtp;
mod stream;
pub mod voice;

pub use demux::{demux, divert, is_rtcp, Datagram};
pub use keys::{
    Direction, KeySalt, MasterKeys, Role, SessionKeys, EXPORTER_CONTEXT, EXPORTER_LABEL,
    EXPORTER_LEN,
};
pub use stream::{Receiver, Sender, SharedSender, Unprotected};

/// Bytes of the AES-GCM authentication tag after every SRTP and SRTCP
/// packet (RFC 7714 §7: 16 octets).
pub const TAG_LEN: usize = 16;

/// Bytes of the `E || SRTCP index` word at the end of an SRTCP packet.
pub const SRTCP_INDEX_LEN: usize = 4;

/// Why a packet was not protected or not accepted. One enum for the media
/// plane: parsing, authentication, replay and the sender's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The packet ends before its header, its extension or its tag does.
    #[error("truncated packet")]
    Truncated,
    /// The version field is not 2: not RTP or RTCP.
    #[error("not an RTP packet (version is not 2)")]
    NotRtp,
    /// RTCP was expected but the packet type is outside 192-223.
    #[error("not an RTCP packet type")]
    NotRtcp,
    /// A header field the builder was asked to write cannot be expressed, or
    /// an extension element runs past its extension.
    #[error("malformed header or extension")]
    Malformed,
    /// The P bit is set but the padding count is 0 or longer than the payload.
    #[error("invalid RTP padding")]
    BadPadding,
    /// The packet's SSRC is not the one this sender or receiver is for.
    #[error("SSRC of another stream")]
    WrongSsrc,
    /// The tag does not verify: forged, corrupted, or another key.
    #[error("authentication failed")]
    AuthFailed,
    /// This packet index was already accepted (replay window).
    #[error("replayed packet")]
    Replayed,
    /// The packet index is behind the replay window, or from before the
    /// stream's first packet: it can no longer be told from a replay.
    #[error("packet too old for the replay window")]
    TooOld,
    /// The sender was asked to protect an index not newer than the last
    /// one: that would reuse an AES-GCM IV.
    #[error("packet index not newer than the last protected")]
    IndexReused,
    /// The rollover counter or SRTCP index is spent: new keys are needed.
    #[error("packet index space exhausted; rekey")]
    Exhausted,
    /// The output buffer cannot hold the protected packet.
    #[error("buffer too small")]
    BufferTooSmall,
    /// The packet is longer than AES-GCM allows.
    #[error("packet too long for the AEAD")]
    TooLong,
    /// The exporter output is not [`EXPORTER_LEN`] bytes.
    #[error("TLS exporter output must be {EXPORTER_LEN} bytes")]
    ExporterLength,
}

#[cfg(test)]
mod tests;
