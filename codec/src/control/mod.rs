//! Control frames, carried on the one bidirectional stream a terminal opens
//! after the QUIC handshake.
//!
//! Every frame is `type: u8`, `length: u16` (big-endian, length of the body),
//! then `length` bytes of body. Framing ([`split_frame`], in `frame.rs`) is
//! separate from body decoding ([`ClientMsg::decode`] in `client.rs`,
//! [`ServerMsg::decode`] in `server.rs`) so that a receiver can skip a frame
//! whose body it does not understand and stay in sync.

mod client;
mod frame;
mod media;
mod server;

pub use client::ClientMsg;
pub use frame::{
    kind, split_frame, FrameError, RawFrame, HEADER_LEN, MAX_BODY, MAX_CREDENTIAL, MAX_MESSAGE,
    MAX_NAME, VERSION,
};
pub use media::{MediaAnswer, MediaOffer};
pub use server::{Membership, ServerMsg, MAX_LIST_GROUPS, MAX_LIST_TERMINALS};
