//! Framing shared by both directions: the frame header, [`split_frame`],
//! [`FrameError`], the frame type numbers, the protocol's limits, and the
//! helpers that write frames and read the fields both directions use.

use bytes::{BufMut, BytesMut};

use crate::alert::ReceiptStatus;
use crate::reader::Reader;
use crate::{Class, GroupId, Malformed, TerminalId};

/// Protocol version spoken by this crate, sent in [`ClientMsg::Hello`].
///
/// [`ClientMsg::Hello`]: super::ClientMsg::Hello
pub const VERSION: u8 = 1;

/// Bytes of a frame header: type (1) and body length (2).
pub const HEADER_LEN: usize = 3;

/// Largest body a control frame may carry. Bigger payloads (alert attachments)
/// travel on their own streams.
pub const MAX_BODY: usize = 16 * 1024;

/// Longest credential accepted in `Hello`.
pub const MAX_CREDENTIAL: usize = 64;

/// Longest display name (UTF-8 bytes).
pub const MAX_NAME: usize = 256;

/// Longest human-readable error message (UTF-8 bytes).
pub const MAX_MESSAGE: usize = 1024;

/// Frame type numbers. Terminal-to-gateway types are `0x01..=0x3f`,
/// gateway-to-terminal types are `0x40..=0x7f`.
pub mod kind {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0x01;
    pub const JOIN: u8 = 0x02;
    pub const LEAVE: u8 = 0x03;
    pub const FLOOR_REQUEST: u8 = 0x04;
    pub const FLOOR_RELEASE: u8 = 0x05;
    pub const PING: u8 = 0x06;
    pub const LOGOUT: u8 = 0x07;
    pub const ALERT_SEND: u8 = 0x08;
    pub const ALERT_RECEIPT: u8 = 0x09;
    pub const ALERT_QUERY: u8 = 0x0a;
    pub const POSITION: u8 = 0x0b;
    pub const WATCH_POSITIONS: u8 = 0x0c;
    pub const SOS: u8 = 0x0d;
    pub const SOS_CANCEL: u8 = 0x0e;
    pub const ATTACHMENT_PUT: u8 = 0x0f;
    pub const ATTACHMENT_FETCH: u8 = 0x10;
    pub const DRILL_REPORT_QUERY: u8 = 0x11;
    pub const MEDIA_MODE: u8 = 0x12;
    pub const LINK_REPORT: u8 = 0x13;

    pub const WELCOME: u8 = 0x41;
    pub const JOINED: u8 = 0x42;
    pub const LEFT: u8 = 0x43;
    pub const FLOOR_GRANTED: u8 = 0x44;
    pub const FLOOR_DENIED: u8 = 0x45;
    pub const FLOOR_QUEUED: u8 = 0x46;
    pub const FLOOR_TAKEN: u8 = 0x47;
    pub const FLOOR_IDLE: u8 = 0x48;
    pub const FLOOR_REVOKED: u8 = 0x49;
    pub const PRESENCE: u8 = 0x4a;
    pub const ERROR: u8 = 0x4b;
    pub const PONG: u8 = 0x4c;
    pub const ALERT_ACCEPTED: u8 = 0x4d;
    pub const ALERT: u8 = 0x4e;
    pub const RECEIPT_UPDATE: u8 = 0x4f;
    pub const RECEIPT_SAVED: u8 = 0x50;
    pub const ALERT_STATUS: u8 = 0x51;
    pub const ALERT_REFUSED: u8 = 0x52;
    pub const POSITION_UPDATE: u8 = 0x53;
    pub const ALERT_CANCELLED: u8 = 0x54;
    pub const ATTACHMENT_STORED: u8 = 0x55;
    pub const ATTACHMENT: u8 = 0x56;
    pub const DRILL_REPORT: u8 = 0x57;
}

/// Why a byte sequence is not a complete, valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed; read more and try again. Not an error of the
    /// peer.
    #[error("incomplete frame")]
    Incomplete,
    /// The header announces a body longer than [`MAX_BODY`]. The stream
    /// cannot be resynchronised: close the connection.
    #[error("frame body of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLong(usize),
}

/// One frame cut out of a byte stream, body not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The frame type (see [`kind`]).
    pub kind: u8,
    /// The body, exactly as long as the header said.
    pub body: &'a [u8],
}

impl RawFrame<'_> {
    /// Bytes this frame occupies in the stream, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Whether the frame is empty; never true, a frame has a header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Cuts the first frame off `src`.
///
/// Returns [`FrameError::Incomplete`] until the whole frame is buffered.
/// Consume `frame.len()` bytes after handling it.
pub fn split_frame(src: &[u8]) -> Result<RawFrame<'_>, FrameError> {
    if src.len() < HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let kind = src[0];
    let len = usize::from(u16::from_be_bytes([src[1], src[2]]));
    if len > MAX_BODY {
        return Err(FrameError::TooLong(len));
    }
    let body = src
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(FrameError::Incomplete)?;
    Ok(RawFrame { kind, body })
}

/// Writes one frame: header, then the body produced by `body`.
pub(super) fn put_frame(out: &mut BytesMut, kind: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u8(kind);
    out.put_u16(0);
    body(out);
    let len = out.len() - start - HEADER_LEN;
    // Encoders only produce bodies below MAX_BODY: names and messages are
    // truncated by `put_string`, lists are bounded by their callers.
    assert!(len <= MAX_BODY, "control frame body of {len} bytes");
    out[start + 1..start + 3].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Writes a u16-length-prefixed string, truncated at a char boundary to
/// `max` bytes so an over-long display name can never break framing.
pub(super) fn put_string(out: &mut BytesMut, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

pub(super) fn class(r: &mut Reader<'_>) -> Result<Class, Malformed> {
    Class::from_code(r.u8()?).ok_or(Malformed::InvalidValue("class"))
}

/// Latitude and longitude in 1e-7 degrees, range-checked.
pub(super) fn coordinates(r: &mut Reader<'_>) -> Result<(i32, i32), Malformed> {
    let lat = r.u32()? as i32;
    let lon = r.u32()? as i32;
    if !(-900_000_000..=900_000_000).contains(&lat)
        || !(-1_800_000_000..=1_800_000_000).contains(&lon)
    {
        return Err(Malformed::InvalidValue("coordinates"));
    }
    Ok((lat, lon))
}

pub(super) fn receipt_status(r: &mut Reader<'_>) -> Result<ReceiptStatus, Malformed> {
    ReceiptStatus::from_code(r.u8()?).ok_or(Malformed::InvalidValue("receipt status"))
}

pub(super) fn group(r: &mut Reader<'_>) -> Result<GroupId, Malformed> {
    match r.u32()? {
        0 => Err(Malformed::InvalidValue("group 0")),
        g => Ok(GroupId(g)),
    }
}

pub(super) fn terminal(r: &mut Reader<'_>) -> Result<TerminalId, Malformed> {
    match r.u32()? {
        0 => Err(Malformed::InvalidValue("terminal 0")),
        t => Ok(TerminalId(t)),
    }
}
