//! Frames a terminal sends to the gateway ([`ClientMsg`]), type numbers
//! `0x01..=0x3f`.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{
    class, coordinates, group, kind, put_frame, put_string, terminal, RawFrame, MAX_CREDENTIAL,
    MAX_MESSAGE,
};
use super::media::MediaOffer;
use crate::alert::{AlertBody, ReceiptStatus, Target, MAX_MIME};
use crate::reader::Reader;
use crate::{Class, GroupId, Malformed, TerminalId};

/// Frames a terminal sends to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// First frame on the control stream: who the terminal is.
    Hello {
        /// Protocol version, [`VERSION`](super::VERSION).
        version: u8,
        /// The terminal's id from the org file.
        terminal: TerminalId,
        /// The terminal's provisioned credential (1 to [`MAX_CREDENTIAL`] bytes).
        credential: Bytes,
        /// Media forms it offers beyond QUIC DATAGRAM voice (an optional
        /// last byte on the wire).
        media: MediaOffer,
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
        /// Content length, 1 to [`MAX_ATTACHMENT`](crate::alert::MAX_ATTACHMENT).
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
    /// Which form the terminal wants to receive voice in from now on:
    /// SRTP (after a `Welcome` that answered its offer, once its media path
    /// is verified) or, with `srtp: false`, QUIC DATAGRAMs (the fallback
    /// when SRTP packets do not get through).
    MediaMode {
        /// True for SRTP, false for QUIC DATAGRAMs.
        srtp: bool,
    },
    /// How well the terminal hears: its reception of voice frames over the
    /// interval since its previous report (about every 5 s, while it hears
    /// voice). The gateway keeps the last one per terminal for the command
    /// room (docs/PROTOCOL.md, "Link quality reports").
    LinkReport {
        /// Voice frames received, late ones included, duplicates not.
        received: u32,
        /// Frames missing from gaps in a burst's sequence numbers (minus
        /// those that arrived late in the same interval).
        lost: u32,
        /// Frames received out of order or more than the reorder window
        /// after their time: too late to play. At most `received`.
        late: u32,
        /// RFC 3550 interarrival jitter, microseconds, 20 ms per frame as
        /// the media clock.
        jitter_us: u32,
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
            ClientMsg::MediaMode { .. } => kind::MEDIA_MODE,
            ClientMsg::LinkReport { .. } => kind::LINK_REPORT,
        }
    }

    /// Appends this message as one frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        put_frame(out, self.kind(), |b| match self {
            ClientMsg::Hello {
                version,
                terminal,
                credential,
                media,
            } => {
                b.put_u8(*version);
                b.put_u32(terminal.0);
                let n = credential.len().min(MAX_CREDENTIAL);
                b.put_u8(n as u8);
                b.put_slice(&credential[..n]);
                media.encode(b);
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
            ClientMsg::MediaMode { srtp } => b.put_u8(u8::from(*srtp)),
            ClientMsg::LinkReport {
                received,
                lost,
                late,
                jitter_us,
            } => {
                b.put_u32(*received);
                b.put_u32(*lost);
                b.put_u32(*late);
                b.put_u32(*jitter_us);
            }
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
                let media = MediaOffer::decode(&mut r)?;
                ClientMsg::Hello {
                    version,
                    terminal,
                    credential,
                    media,
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
            kind::MEDIA_MODE => ClientMsg::MediaMode { srtp: r.bool()? },
            kind::LINK_REPORT => {
                let (received, lost, late, jitter_us) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
                // Late frames are received frames: more late than received
                // is a broken or lying counter, not a reading.
                if late > received {
                    return Err(Malformed::InvalidValue("late above received"));
                }
                ClientMsg::LinkReport {
                    received,
                    lost,
                    late,
                    jitter_us,
                }
            }
            other => return Err(Malformed::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}
