//! Wire format of the PTT gateway protocol, and the audio helpers terminals
//! need: an Opus encoder/decoder wrapper (module `audio`, behind the `audio`
//! feature, which links libopus; the gateway leaves it off and never decodes
//! voice).
//!
//! Everything here is pure: bytes in, values out. No sockets, no tokio. The
//! protocol itself is specified in `docs/PROTOCOL.md`; the hex test vectors
//! there are checked by `tests/vectors.rs`.
//!
//! Two kinds of decoding failure are kept apart, as in mini-redis:
//! [`control::FrameError::Incomplete`] means "read more bytes", while
//! [`Malformed`] means the peer sent something invalid.

pub mod alert;
#[cfg(feature = "audio")]
pub mod audio;
mod codes;
pub mod control;
mod ids;
mod reader;
pub mod receipt;
pub mod srtp;
pub mod voice;

/// TLS application protocol (ALPN) of this protocol, version 1.
pub const ALPN: &[u8] = b"ptt/1";

pub use alert::{
    AlertBody, AlertKind, AttachmentRef, Location, ReceiptStatus, StatusCounts, Target,
};
pub use codes::{Class, CloseCode, DenyCause, ErrorCode, RevokeCause};
pub use control::{ClientMsg, MediaAnswer, MediaOffer, Membership, ServerMsg};
pub use ids::{GroupId, TerminalId};
pub use voice::VoiceHeader;

/// Why a frame body or a datagram is invalid. The frame it came in can be
/// skipped; the stream stays in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The body ended before a field did.
    #[error("truncated")]
    Truncated,
    /// Bytes were left after the last field.
    #[error("trailing bytes after the last field")]
    TrailingBytes,
    /// A length or count exceeds its limit.
    #[error("length exceeds the limit")]
    TooLong,
    /// A string is not valid UTF-8.
    #[error("invalid UTF-8 in a string")]
    InvalidUtf8,
    /// A field holds a value the protocol does not define.
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
    /// The frame type is not known to this version.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
}
