//! Frames the gateway sends to a terminal ([`ServerMsg`]), type numbers
//! `0x40..=0x7f`.

use bytes::{BufMut, BytesMut};

use super::frame::{
    class, coordinates, group, kind, put_frame, put_string, receipt_status, terminal, RawFrame,
    MAX_MESSAGE, MAX_NAME,
};
use super::media::MediaAnswer;
use crate::alert::{AlertBody, ReceiptStatus, StatusCounts, MAX_ATTACHMENT, MAX_MIME};
use crate::reader::Reader;
use crate::{Class, DenyCause, ErrorCode, GroupId, Malformed, RevokeCause, TerminalId};

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
        /// The answer to the terminal's SRTP offer: `None` when it offered
        /// none or the gateway declines (voice stays in QUIC DATAGRAMs).
        media: Option<MediaAnswer>,
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
    /// Lists longer than fit in [`MAX_BODY`](super::MAX_BODY) are cut short; the gateway never
    /// builds such lists (a group has far fewer members online).
    pub fn encode(&self, out: &mut BytesMut) {
        put_frame(out, self.kind(), |b| match self {
            ServerMsg::Welcome {
                terminal,
                name,
                resumed,
                groups,
                media,
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
                MediaAnswer::encode(*media, b);
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
                let media = MediaAnswer::decode(&mut r)?;
                ServerMsg::Welcome {
                    terminal,
                    name,
                    resumed,
                    groups,
                    media,
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
