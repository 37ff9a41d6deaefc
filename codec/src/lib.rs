//! Wire format of the PTT gateway protocol, and the audio helpers terminals
//! need: an Opus encoder/decoder wrapper and WAV/Ogg writers.
//!
//! Everything here is pure: bytes in, values out. No sockets, no tokio. The
//! protocol itself is specified in `docs/PROTOCOL.md`; the hex test vectors
//! there are checked by `tests/vectors.rs`.

mod codes;
mod ids;

pub use codes::{Class, CloseCode, DenyCause, ErrorCode, RevokeCause};
pub use ids::{GroupId, TerminalId};
