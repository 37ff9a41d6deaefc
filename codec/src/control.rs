//! Control frames, carried on the one bidirectional stream a terminal opens
//! after the QUIC handshake.
//!
//! Every frame is `type: u8`, `length: u16` (big-endian, length of the body),
//! then `length` bytes of body. Framing ([`split_frame`]) is separate from body
//! decoding ([`ClientMsg::decode`], [`ServerMsg::decode`]) so that a receiver
//! can skip a frame whose body it does not understand and stay in sync.

use bytes::{BufMut, Bytes, BytesMut};

use crate::alert::{AlertBody, ReceiptStatus, StatusCounts, Target, MAX_ATTACHMENT, MAX_MIME};
use crate::reader::Reader;
use crate::{Class, DenyCause, ErrorCode, GroupId, Malformed, RevokeCause, TerminalId};

/// Protocol version spoken by this crate, sent in [`ClientMsg::Hello`].
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
fn put_frame(out: &mut BytesMut, kind: u8, body: impl FnOnce(&mut BytesMut)) {
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
fn put_string(out: &mut BytesMut, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn class(r: &mut Reader<'_>) -> Result<Class, Malformed> {
    Class::from_code(r.u8()?).ok_or(Malformed::InvalidValue("class"))
}

/// Latitude and longitude in 1e-7 degrees, range-checked.
fn coordinates(r: &mut Reader<'_>) -> Result<(i32, i32), Malformed> {
    let lat = r.u32()? as i32;
    let lon = r.u32()? as i32;
    if !(-900_000_000..=900_000_000).contains(&lat)
        || !(-1_800_000_000..=1_800_000_000).contains(&lon)
    {
        return Err(Malformed::InvalidValue("coordinates"));
    }
    Ok((lat, lon))
}

fn receipt_status(r: &mut Reader<'_>) -> Result<ReceiptStatus, Malformed> {
    ReceiptStatus::from_code(r.u8()?).ok_or(Malformed::InvalidValue("receipt status"))
}

fn group(r: &mut Reader<'_>) -> Result<GroupId, Malformed> {
    match r.u32()? {
        0 => Err(Malformed::InvalidValue("group 0")),
        g => Ok(GroupId(g)),
    }
}

fn terminal(r: &mut Reader<'_>) -> Result<TerminalId, Malformed> {
    match r.u32()? {
        0 => Err(Malformed::InvalidValue("terminal 0")),
        t => Ok(TerminalId(t)),
    }
}

/// Frames a terminal sends to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// First frame on the control stream: who the terminal is.
    Hello {
        /// Protocol version, [`VERSION`].
        version: u8,
        /// The terminal's id from the org file.
        terminal: TerminalId,
        /// The terminal's provisioned credential (1 to [`MAX_CREDENTIAL`] bytes).
        credential: Bytes,
    },
    /// Join a talk group (listen, and talk if allowed).
    Join {
        /// The group.
        group: GroupId,
    },
    /// Leave a talk group.
    Leave {
        /// The group.
        group: GroupId,
    },
    /// Ask for the floor (press the talk key).
    FloorRequest {
        /// The group.
        group: GroupId,
        /// Normal, imminent peril or emergency.
        class: Class,
    },
    /// Give the floor back (release the talk key), or withdraw a queued request.
    FloorRelease {
        /// The group.
        group: GroupId,
    },
    /// Application-level round-trip probe; answered with `Pong`.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// The terminal logs out: the gateway forgets its groups instead of
    /// keeping them for a reconnect.
    Logout,
    /// Send an alert (consoles).
    AlertSend {
        /// Chosen by the sender; echoed in `AlertAccepted`/`AlertRefused`.
        request: u32,
        /// What it says.
        body: AlertBody,
        /// Who gets it.
        target: Target,
    },
    /// A recipient's progress on an alert.
    AlertReceipt {
        /// The alert.
        alert: u64,
        /// Delivered, read, accepted, rejected, arrived or resolved.
        status: ReceiptStatus,
        /// Why, for a rejection (may be empty otherwise).
        reason: String,
    },
    /// Ask for an alert's status summary (its issuer).
    AlertQuery {
        /// The alert.
        alert: u64,
    },
    /// The terminal's position (every 30 s or so, and when it moves).
    Position {
        /// Latitude, 1e-7 degrees.
        lat_e7: i32,
        /// Longitude, 1e-7 degrees.
        lon_e7: i32,
        /// Accuracy radius, metres.
        accuracy_m: u16,
    },
    /// Follow the positions of every terminal at or under `node` (consoles);
    /// node 0 stops.
    WatchPositions {
        /// The node, or 0.
        node: u32,
    },
    /// Raise an emergency: alert the unit and the police station's command
    /// room, and take the unit's floor with emergency class (hot mic).
    Sos,
    /// Cancel `terminal`'s SOS (itself, or a console above it).
    SosCancel {
        /// Whose SOS.
        terminal: TerminalId,
    },
    /// Upload an attachment. Only as the first frame of a unidirectional
    /// stream the terminal opens, followed by exactly `size` bytes of
    /// content and the end of the stream. Answered on the control stream
    /// with `AttachmentStored` or `AlertRefused` (same `request` space as
    /// `AlertSend`).
    AttachmentPut {
        /// Chosen by the sender; echoed in the answer.
        request: u32,
        /// Media type, e.g. `image/jpeg` (1 to [`MAX_MIME`] bytes).
        mime: String,
        /// Content length, 1 to [`MAX_ATTACHMENT`].
        size: u32,
    },
    /// Ask for an attachment of an alert this terminal received or sent
    /// (handhelds, which get only the alert's text). Arrives as an
    /// `Attachment` stream.
    AttachmentFetch {
        /// The attachment.
        attachment: u64,
    },
    /// Ask for a drill's report (its issuer, or a console above it).
    /// Arrives as a `DrillReport` stream.
    DrillReportQuery {
        /// The drill alert.
        alert: u64,
    },
}

impl ClientMsg {
    /// The frame type of this message.
    pub fn kind(&self) -> u8 {
        match self {
            ClientMsg::Hello { .. } => kind::HELLO,
            ClientMsg::Join { .. } => kind::JOIN,
            ClientMsg::Leave { .. } => kind::LEAVE,
            ClientMsg::FloorRequest { .. } => kind::FLOOR_REQUEST,
            ClientMsg::FloorRelease { .. } => kind::FLOOR_RELEASE,
            ClientMsg::Ping { .. } => kind::PING,
            ClientMsg::Logout => kind::LOGOUT,
            ClientMsg::AlertSend { .. } => kind::ALERT_SEND,
            ClientMsg::AlertReceipt { .. } => kind::ALERT_RECEIPT,
            ClientMsg::AlertQuery { .. } => kind::ALERT_QUERY,
            ClientMsg::Position { .. } => kind::POSITION,
            ClientMsg::WatchPositions { .. } => kind::WATCH_POSITIONS,
            ClientMsg::Sos => kind::SOS,
            ClientMsg::SosCancel { .. } => kind::SOS_CANCEL,
            ClientMsg::AttachmentPut { .. } => kind::ATTACHMENT_PUT,
            ClientMsg::AttachmentFetch { .. } => kind::ATTACHMENT_FETCH,
            ClientMsg::DrillReportQuery { .. } => kind::DRILL_REPORT_QUERY,
        }
    }

    /// Appends this message as one frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        put_frame(out, self.kind(), |b| match self {
            ClientMsg::Hello {
                version,
                terminal,
                credential,
            } => {
                b.put_u8(*version);
                b.put_u32(terminal.0);
                let n = credential.len().min(MAX_CREDENTIAL);
                b.put_u8(n as u8);
                b.put_slice(&credential[..n]);
            }
            ClientMsg::Join { group } | ClientMsg::Leave { group } => b.put_u32(group.0),
            ClientMsg::FloorRequest { group, class } => {
                b.put_u32(group.0);
                b.put_u8(class.code());
            }
            ClientMsg::FloorRelease { group } => b.put_u32(group.0),
            ClientMsg::Ping { nonce } => b.put_u64(*nonce),
            ClientMsg::Logout => {}
            ClientMsg::AlertSend {
                request,
                body,
                target,
            } => {
                b.put_u32(*request);
                target.encode(b);
                body.encode(b);
            }
            ClientMsg::AlertReceipt {
                alert,
                status,
                reason,
            } => {
                b.put_u64(*alert);
                b.put_u8(status.code());
                put_string(b, reason, MAX_MESSAGE);
            }
            ClientMsg::AlertQuery { alert } => b.put_u64(*alert),
            ClientMsg::Position {
                lat_e7,
                lon_e7,
                accuracy_m,
            } => {
                b.put_i32(*lat_e7);
                b.put_i32(*lon_e7);
                b.put_u16(*accuracy_m);
            }
            ClientMsg::WatchPositions { node } => b.put_u32(*node),
            ClientMsg::Sos => {}
            ClientMsg::SosCancel { terminal } => b.put_u32(terminal.0),
            ClientMsg::AttachmentPut {
                request,
                mime,
                size,
            } => {
                b.put_u32(*request);
                put_string(b, mime, MAX_MIME);
                b.put_u32(*size);
            }
            ClientMsg::AttachmentFetch { attachment } => b.put_u64(*attachment),
            ClientMsg::DrillReportQuery { alert } => b.put_u64(*alert),
        });
    }

    /// Decodes the body of a frame of type `kind`.
    pub fn decode(frame: RawFrame<'_>) -> Result<Self, Malformed> {
        let mut r = Reader::new(frame.body);
        let msg = match frame.kind {
            kind::HELLO => {
                let version = r.u8()?;
                let terminal = terminal(&mut r)?;
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_CREDENTIAL {
                    return Err(Malformed::InvalidValue("credential length"));
                }
                let credential = Bytes::copy_from_slice(r.bytes(n)?);
                ClientMsg::Hello {
                    version,
                    terminal,
                    credential,
                }
            }
            kind::JOIN => ClientMsg::Join {
                group: group(&mut r)?,
            },
            kind::LEAVE => ClientMsg::Leave {
                group: group(&mut r)?,
            },
            kind::FLOOR_REQUEST => ClientMsg::FloorRequest {
                group: group(&mut r)?,
                class: class(&mut r)?,
            },
            kind::FLOOR_RELEASE => ClientMsg::FloorRelease {
                group: group(&mut r)?,
            },
            kind::PING => ClientMsg::Ping { nonce: r.u64()? },
            kind::LOGOUT => ClientMsg::Logout,
            kind::ALERT_SEND => {
                let request = r.u32()?;
                let target = Target::decode(&mut r)?;
                ClientMsg::AlertSend {
                    request,
                    body: AlertBody::decode(&mut r)?,
                    target,
                }
            }
            kind::ALERT_RECEIPT => ClientMsg::AlertReceipt {
                alert: r.u64()?,
                status: match ReceiptStatus::from_code(r.u8()?) {
                    None | Some(ReceiptStatus::Pending) => {
                        return Err(Malformed::InvalidValue("receipt status"))
                    }
                    Some(s) => s,
                },
                reason: r.string(MAX_MESSAGE)?,
            },
            kind::ALERT_QUERY => ClientMsg::AlertQuery { alert: r.u64()? },
            kind::POSITION => {
                let (lat_e7, lon_e7) = coordinates(&mut r)?;
                ClientMsg::Position {
                    lat_e7,
                    lon_e7,
                    accuracy_m: r.u16()?,
                }
            }
            kind::WATCH_POSITIONS => ClientMsg::WatchPositions { node: r.u32()? },
            kind::SOS => ClientMsg::Sos,
            kind::SOS_CANCEL => ClientMsg::SosCancel {
                terminal: terminal(&mut r)?,
            },
            kind::ATTACHMENT_PUT => {
                let request = r.u32()?;
                let mime = r.string(MAX_MIME)?;
                let size = r.u32()?;
                if mime.is_empty() {
                    return Err(Malformed::InvalidValue("empty media type"));
                }
                // The size limit is policy, checked by the gateway so it can
                // answer ATTACHMENT_TOO_LARGE; 0 is never meaningful.
                if size == 0 {
                    return Err(Malformed::InvalidValue("empty attachment"));
                }
                ClientMsg::AttachmentPut {
                    request,
                    mime,
                    size,
                }
            }
            kind::ATTACHMENT_FETCH => match r.u64()? {
                0 => return Err(Malformed::InvalidValue("attachment 0")),
                attachment => ClientMsg::AttachmentFetch { attachment },
            },
            kind::DRILL_REPORT_QUERY => ClientMsg::DrillReportQuery { alert: r.u64()? },
            other => return Err(Malformed::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// A group the terminal is in, as listed in `Welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The group.
    pub group: GroupId,
    /// Whether the terminal may request the floor there.
    pub talk: bool,
}

/// Frames the gateway sends to a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// Authentication succeeded.
    Welcome {
        /// The authenticated terminal.
        terminal: TerminalId,
        /// Its display name from the org file.
        name: String,
        /// True when an earlier session's state (groups) was restored.
        resumed: bool,
        /// Groups the terminal is in now (non-empty only when resumed).
        groups: Vec<Membership>,
    },
    /// A `Join` succeeded (also sent again for an already joined group).
    Joined {
        /// The group.
        group: GroupId,
        /// Whether the terminal may request the floor there.
        talk: bool,
        /// The group's (node's) display name.
        name: String,
        /// Members online in the group right now, the joiner included.
        online: Vec<TerminalId>,
    },
    /// The terminal is no longer in the group.
    Left {
        /// The group.
        group: GroupId,
    },
    /// The floor is the terminal's: send voice with this burst id.
    FloorGranted {
        /// The group.
        group: GroupId,
        /// Burst id to put in every voice datagram of this burst.
        burst: u16,
        /// Talk-time limit in milliseconds; the floor is revoked after it.
        limit_ms: u32,
    },
    /// The request was refused.
    FloorDenied {
        /// The group.
        group: GroupId,
        /// Why.
        cause: DenyCause,
    },
    /// The request is queued; `position` 1 is next.
    FloorQueued {
        /// The group.
        group: GroupId,
        /// Position in the queue, from 1.
        position: u16,
    },
    /// Someone else has the floor (also sent on join during a burst: late entry).
    FloorTaken {
        /// The group.
        group: GroupId,
        /// Who talks.
        speaker: TerminalId,
        /// The burst id the voice datagrams carry.
        burst: u16,
        /// The burst's class.
        class: Class,
        /// The speaker's display name.
        name: String,
    },
    /// Nobody has the floor.
    FloorIdle {
        /// The group.
        group: GroupId,
    },
    /// The terminal lost the floor involuntarily; stop sending.
    FloorRevoked {
        /// The group.
        group: GroupId,
        /// The burst that ended.
        burst: u16,
        /// Why.
        cause: RevokeCause,
    },
    /// A member of a group came online or went offline.
    Presence {
        /// The group.
        group: GroupId,
        /// The member.
        terminal: TerminalId,
        /// Online now?
        online: bool,
    },
    /// A request failed. The connection stays open.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Type of the frame that caused it (0 if none).
        frame: u8,
        /// The group concerned (none if the frame had none).
        group: Option<GroupId>,
        /// Human-readable detail, for logs.
        message: String,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The alert is stored and will reach its recipients.
    AlertAccepted {
        /// The sender's request id.
        request: u32,
        /// The alert's id.
        alert: u64,
        /// How many terminals it targets.
        recipients: u32,
    },
    /// An alert for this terminal (sent on a unidirectional stream).
    Alert {
        /// Its id: the same alert delivered twice has the same id.
        alert: u64,
        /// Who sent it.
        issuer: TerminalId,
        /// When it was created, Unix milliseconds.
        created_ms: u64,
        /// When it expires, Unix milliseconds.
        expires_ms: u64,
        /// Content.
        body: AlertBody,
    },
    /// A recipient's receipt, sent live to the alert's issuer.
    ReceiptUpdate {
        /// The alert.
        alert: u64,
        /// The recipient.
        terminal: TerminalId,
        /// Its new status.
        status: ReceiptStatus,
        /// When, Unix milliseconds.
        at_ms: u64,
        /// Reason (rejections).
        reason: String,
    },
    /// The terminal's receipt is stored.
    ReceiptSaved {
        /// The alert.
        alert: u64,
        /// The status now stored.
        status: ReceiptStatus,
    },
    /// Summary of an alert's recipients.
    AlertStatus {
        /// The alert.
        alert: u64,
        /// Recipients in all.
        recipients: u32,
        /// By status.
        counts: StatusCounts,
    },
    /// An `AlertSend` was refused; nothing was stored.
    AlertRefused {
        /// The sender's request id.
        request: u32,
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// An alert (an SOS) was cancelled.
    AlertCancelled {
        /// The alert.
        alert: u64,
        /// Who cancelled it.
        by: TerminalId,
    },
    /// An attachment is stored; reference it in an alert by `attachment`.
    AttachmentStored {
        /// The sender's request id.
        request: u32,
        /// The attachment's id.
        attachment: u64,
        /// Its size, bytes.
        size: u32,
    },
    /// An attachment: the first frame of a unidirectional stream from the
    /// gateway, followed by exactly `size` bytes of content.
    Attachment {
        /// The attachment.
        attachment: u64,
        /// The alert that carries it (0 when fetched by its uploader
        /// before any alert referenced it).
        alert: u64,
        /// Media type.
        mime: String,
        /// Content length.
        size: u32,
    },
    /// A drill report: the first frame of a unidirectional stream from the
    /// gateway, followed by `size` bytes of UTF-8 JSON (see PROTOCOL.md).
    DrillReport {
        /// The drill alert.
        alert: u64,
        /// Length of the JSON document.
        size: u32,
    },
    /// A watched terminal's new position.
    PositionUpdate {
        /// Who.
        terminal: TerminalId,
        /// Latitude, 1e-7 degrees.
        lat_e7: i32,
        /// Longitude, 1e-7 degrees.
        lon_e7: i32,
        /// Accuracy radius, metres.
        accuracy_m: u16,
        /// When the gateway received it, Unix ms.
        at_ms: u64,
    },
}

impl ServerMsg {
    /// The frame type of this message.
    pub fn kind(&self) -> u8 {
        match self {
            ServerMsg::Welcome { .. } => kind::WELCOME,
            ServerMsg::Joined { .. } => kind::JOINED,
            ServerMsg::Left { .. } => kind::LEFT,
            ServerMsg::FloorGranted { .. } => kind::FLOOR_GRANTED,
            ServerMsg::FloorDenied { .. } => kind::FLOOR_DENIED,
            ServerMsg::FloorQueued { .. } => kind::FLOOR_QUEUED,
            ServerMsg::FloorTaken { .. } => kind::FLOOR_TAKEN,
            ServerMsg::FloorIdle { .. } => kind::FLOOR_IDLE,
            ServerMsg::FloorRevoked { .. } => kind::FLOOR_REVOKED,
            ServerMsg::Presence { .. } => kind::PRESENCE,
            ServerMsg::Error { .. } => kind::ERROR,
            ServerMsg::Pong { .. } => kind::PONG,
            ServerMsg::AlertAccepted { .. } => kind::ALERT_ACCEPTED,
            ServerMsg::Alert { .. } => kind::ALERT,
            ServerMsg::ReceiptUpdate { .. } => kind::RECEIPT_UPDATE,
            ServerMsg::ReceiptSaved { .. } => kind::RECEIPT_SAVED,
            ServerMsg::AlertStatus { .. } => kind::ALERT_STATUS,
            ServerMsg::AlertRefused { .. } => kind::ALERT_REFUSED,
            ServerMsg::PositionUpdate { .. } => kind::POSITION_UPDATE,
            ServerMsg::AlertCancelled { .. } => kind::ALERT_CANCELLED,
            ServerMsg::AttachmentStored { .. } => kind::ATTACHMENT_STORED,
            ServerMsg::Attachment { .. } => kind::ATTACHMENT,
            ServerMsg::DrillReport { .. } => kind::DRILL_REPORT,
        }
    }

    /// The group this message is about, if any.
    pub fn group(&self) -> Option<GroupId> {
        match self {
            ServerMsg::Welcome { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::AlertAccepted { .. }
            | ServerMsg::Alert { .. }
            | ServerMsg::ReceiptUpdate { .. }
            | ServerMsg::ReceiptSaved { .. }
            | ServerMsg::AlertStatus { .. }
            | ServerMsg::AlertRefused { .. }
            | ServerMsg::PositionUpdate { .. }
            | ServerMsg::AlertCancelled { .. }
            | ServerMsg::AttachmentStored { .. }
            | ServerMsg::Attachment { .. }
            | ServerMsg::DrillReport { .. } => None,
            ServerMsg::Error { group, .. } => *group,
            ServerMsg::Joined { group, .. }
            | ServerMsg::Left { group }
            | ServerMsg::FloorGranted { group, .. }
            | ServerMsg::FloorDenied { group, .. }
            | ServerMsg::FloorQueued { group, .. }
            | ServerMsg::FloorTaken { group, .. }
            | ServerMsg::FloorIdle { group }
            | ServerMsg::FloorRevoked { group, .. }
            | ServerMsg::Presence { group, .. } => Some(*group),
        }
    }

    /// Appends this message as one frame to `out`.
    ///
    /// Lists longer than fit in [`MAX_BODY`] are cut short; the gateway never
    /// builds such lists (a group has far fewer members online).
    pub fn encode(&self, out: &mut BytesMut) {
        put_frame(out, self.kind(), |b| match self {
            ServerMsg::Welcome {
                terminal,
                name,
                resumed,
                groups,
            } => {
                b.put_u32(terminal.0);
                put_string(b, name, MAX_NAME);
                b.put_u8(u8::from(*resumed));
                let n = groups.len().min(MAX_LIST_GROUPS);
                b.put_u16(n as u16);
                for m in &groups[..n] {
                    b.put_u32(m.group.0);
                    b.put_u8(u8::from(m.talk));
                }
            }
            ServerMsg::Joined {
                group,
                talk,
                name,
                online,
            } => {
                b.put_u32(group.0);
                b.put_u8(u8::from(*talk));
                put_string(b, name, MAX_NAME);
                let n = online.len().min(MAX_LIST_TERMINALS);
                b.put_u16(n as u16);
                for t in &online[..n] {
                    b.put_u32(t.0);
                }
            }
            ServerMsg::Left { group } | ServerMsg::FloorIdle { group } => b.put_u32(group.0),
            ServerMsg::FloorGranted {
                group,
                burst,
                limit_ms,
            } => {
                b.put_u32(group.0);
                b.put_u16(*burst);
                b.put_u32(*limit_ms);
            }
            ServerMsg::FloorDenied { group, cause } => {
                b.put_u32(group.0);
                b.put_u16(cause.code());
            }
            ServerMsg::FloorQueued { group, position } => {
                b.put_u32(group.0);
                b.put_u16(*position);
            }
            ServerMsg::FloorTaken {
                group,
                speaker,
                burst,
                class,
                name,
            } => {
                b.put_u32(group.0);
                b.put_u32(speaker.0);
                b.put_u16(*burst);
                b.put_u8(class.code());
                put_string(b, name, MAX_NAME);
            }
            ServerMsg::FloorRevoked {
                group,
                burst,
                cause,
            } => {
                b.put_u32(group.0);
                b.put_u16(*burst);
                b.put_u16(cause.code());
            }
            ServerMsg::Presence {
                group,
                terminal,
                online,
            } => {
                b.put_u32(group.0);
                b.put_u32(terminal.0);
                b.put_u8(u8::from(*online));
            }
            ServerMsg::Error {
                code,
                frame,
                group,
                message,
            } => {
                b.put_u16(code.code());
                b.put_u8(*frame);
                b.put_u32(group.map_or(0, |g| g.0));
                put_string(b, message, MAX_MESSAGE);
            }
            ServerMsg::Pong { nonce } => b.put_u64(*nonce),
            ServerMsg::AlertAccepted {
                request,
                alert,
                recipients,
            } => {
                b.put_u32(*request);
                b.put_u64(*alert);
                b.put_u32(*recipients);
            }
            ServerMsg::Alert {
                alert,
                issuer,
                created_ms,
                expires_ms,
                body,
            } => {
                b.put_u64(*alert);
                b.put_u32(issuer.0);
                b.put_u64(*created_ms);
                b.put_u64(*expires_ms);
                body.encode(b);
            }
            ServerMsg::ReceiptUpdate {
                alert,
                terminal,
                status,
                at_ms,
                reason,
            } => {
                b.put_u64(*alert);
                b.put_u32(terminal.0);
                b.put_u8(status.code());
                b.put_u64(*at_ms);
                put_string(b, reason, MAX_MESSAGE);
            }
            ServerMsg::ReceiptSaved { alert, status } => {
                b.put_u64(*alert);
                b.put_u8(status.code());
            }
            ServerMsg::AlertStatus {
                alert,
                recipients,
                counts,
            } => {
                b.put_u64(*alert);
                b.put_u32(*recipients);
                counts.encode(b);
            }
            ServerMsg::AlertRefused {
                request,
                code,
                message,
            } => {
                b.put_u32(*request);
                b.put_u16(code.code());
                put_string(b, message, MAX_MESSAGE);
            }
            ServerMsg::AlertCancelled { alert, by } => {
                b.put_u64(*alert);
                b.put_u32(by.0);
            }
            ServerMsg::AttachmentStored {
                request,
                attachment,
                size,
            } => {
                b.put_u32(*request);
                b.put_u64(*attachment);
                b.put_u32(*size);
            }
            ServerMsg::Attachment {
                attachment,
                alert,
                mime,
                size,
            } => {
                b.put_u64(*attachment);
                b.put_u64(*alert);
                put_string(b, mime, MAX_MIME);
                b.put_u32(*size);
            }
            ServerMsg::DrillReport { alert, size } => {
                b.put_u64(*alert);
                b.put_u32(*size);
            }
            ServerMsg::PositionUpdate {
                terminal,
                lat_e7,
                lon_e7,
                accuracy_m,
                at_ms,
            } => {
                b.put_u32(terminal.0);
                b.put_i32(*lat_e7);
                b.put_i32(*lon_e7);
                b.put_u16(*accuracy_m);
                b.put_u64(*at_ms);
            }
        });
    }

    /// Decodes the body of a frame.
    pub fn decode(frame: RawFrame<'_>) -> Result<Self, Malformed> {
        let mut r = Reader::new(frame.body);
        let msg = match frame.kind {
            kind::WELCOME => {
                let terminal = terminal(&mut r)?;
                let name = r.string(MAX_NAME)?;
                let resumed = r.bool()?;
                let n = usize::from(r.u16()?);
                if n > MAX_LIST_GROUPS {
                    return Err(Malformed::TooLong);
                }
                let mut groups = Vec::with_capacity(n);
                for _ in 0..n {
                    groups.push(Membership {
                        group: group(&mut r)?,
                        talk: r.bool()?,
                    });
                }
                ServerMsg::Welcome {
                    terminal,
                    name,
                    resumed,
                    groups,
                }
            }
            kind::JOINED => {
                let group = group(&mut r)?;
                let talk = r.bool()?;
                let name = r.string(MAX_NAME)?;
                let n = usize::from(r.u16()?);
                if n > MAX_LIST_TERMINALS {
                    return Err(Malformed::TooLong);
                }
                let mut online = Vec::with_capacity(n);
                for _ in 0..n {
                    online.push(terminal(&mut r)?);
                }
                ServerMsg::Joined {
                    group,
                    talk,
                    name,
                    online,
                }
            }
            kind::LEFT => ServerMsg::Left {
                group: group(&mut r)?,
            },
            kind::FLOOR_GRANTED => ServerMsg::FloorGranted {
                group: group(&mut r)?,
                burst: r.u16()?,
                limit_ms: r.u32()?,
            },
            kind::FLOOR_DENIED => ServerMsg::FloorDenied {
                group: group(&mut r)?,
                cause: DenyCause::from_code(r.u16()?)
                    .ok_or(Malformed::InvalidValue("deny cause"))?,
            },
            kind::FLOOR_QUEUED => ServerMsg::FloorQueued {
                group: group(&mut r)?,
                position: r.u16()?,
            },
            kind::FLOOR_TAKEN => ServerMsg::FloorTaken {
                group: group(&mut r)?,
                speaker: terminal(&mut r)?,
                burst: r.u16()?,
                class: class(&mut r)?,
                name: r.string(MAX_NAME)?,
            },
            kind::FLOOR_IDLE => ServerMsg::FloorIdle {
                group: group(&mut r)?,
            },
            kind::FLOOR_REVOKED => ServerMsg::FloorRevoked {
                group: group(&mut r)?,
                burst: r.u16()?,
                cause: RevokeCause::from_code(r.u16()?)
                    .ok_or(Malformed::InvalidValue("revoke cause"))?,
            },
            kind::PRESENCE => ServerMsg::Presence {
                group: group(&mut r)?,
                terminal: terminal(&mut r)?,
                online: r.bool()?,
            },
            kind::ERROR => ServerMsg::Error {
                code: ErrorCode::from_code(r.u16()?)
                    .ok_or(Malformed::InvalidValue("error code"))?,
                frame: r.u8()?,
                group: match r.u32()? {
                    0 => None,
                    g => Some(GroupId(g)),
                },
                message: r.string(MAX_MESSAGE)?,
            },
            kind::PONG => ServerMsg::Pong { nonce: r.u64()? },
            kind::ALERT_ACCEPTED => ServerMsg::AlertAccepted {
                request: r.u32()?,
                alert: r.u64()?,
                recipients: r.u32()?,
            },
            kind::ALERT => ServerMsg::Alert {
                alert: r.u64()?,
                issuer: terminal(&mut r)?,
                created_ms: r.u64()?,
                expires_ms: r.u64()?,
                body: AlertBody::decode(&mut r)?,
            },
            kind::RECEIPT_UPDATE => ServerMsg::ReceiptUpdate {
                alert: r.u64()?,
                terminal: terminal(&mut r)?,
                status: receipt_status(&mut r)?,
                at_ms: r.u64()?,
                reason: r.string(MAX_MESSAGE)?,
            },
            kind::RECEIPT_SAVED => ServerMsg::ReceiptSaved {
                alert: r.u64()?,
                status: receipt_status(&mut r)?,
            },
            kind::ALERT_STATUS => ServerMsg::AlertStatus {
                alert: r.u64()?,
                recipients: r.u32()?,
                counts: StatusCounts::decode(&mut r)?,
            },
            kind::ALERT_CANCELLED => ServerMsg::AlertCancelled {
                alert: r.u64()?,
                by: terminal(&mut r)?,
            },
            kind::POSITION_UPDATE => {
                let terminal = terminal(&mut r)?;
                let (lat_e7, lon_e7) = coordinates(&mut r)?;
                ServerMsg::PositionUpdate {
                    terminal,
                    lat_e7,
                    lon_e7,
                    accuracy_m: r.u16()?,
                    at_ms: r.u64()?,
                }
            }
            kind::ATTACHMENT_STORED => ServerMsg::AttachmentStored {
                request: r.u32()?,
                attachment: r.u64()?,
                size: r.u32()?,
            },
            kind::ATTACHMENT => {
                let attachment = r.u64()?;
                let alert = r.u64()?;
                let mime = r.string(MAX_MIME)?;
                let size = r.u32()?;
                if size > MAX_ATTACHMENT {
                    return Err(Malformed::InvalidValue("attachment size"));
                }
                ServerMsg::Attachment {
                    attachment,
                    alert,
                    mime,
                    size,
                }
            }
            kind::DRILL_REPORT => ServerMsg::DrillReport {
                alert: r.u64()?,
                size: r.u32()?,
            },
            kind::ALERT_REFUSED => ServerMsg::AlertRefused {
                request: r.u32()?,
                code: ErrorCode::from_code(r.u16()?)
                    .ok_or(Malformed::InvalidValue("error code"))?,
                message: r.string(MAX_MESSAGE)?,
            },
            other => return Err(Malformed::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Most groups listed in one `Welcome` (5 bytes each).
pub const MAX_LIST_GROUPS: usize = 2048;

/// Most terminals listed in one `Joined` (4 bytes each).
pub const MAX_LIST_TERMINALS: usize = 3072;
