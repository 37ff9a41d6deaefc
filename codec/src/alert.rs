//! Alert frames: a console pushes an alert to terminals and follows who
//! received, read, accepted, arrived.
//!
//! An alert is sent on the issuer's control stream (`AlertSend`), confirmed
//! only after the gateway has stored it (`AlertAccepted`), delivered to each
//! recipient on a unidirectional stream of its own (`Alert`), and
//! acknowledged by receipts on the recipient's control stream
//! (`AlertReceipt`, confirmed by `ReceiptSaved`). The issuer sees receipts
//! live (`ReceiptUpdate`) and can ask for a summary (`AlertQuery` ->
//! `AlertStatus`).

use bytes::{BufMut, BytesMut};

use crate::reader::Reader;
use crate::{GroupId, Malformed, TerminalId};

/// Longest alert title (UTF-8 bytes).
pub const MAX_TITLE: usize = 256;
/// Longest alert text (UTF-8 bytes).
pub const MAX_TEXT: usize = 4096;
/// Longest address (UTF-8 bytes).
pub const MAX_ADDRESS: usize = 256;
/// Most terminals listed in one target.
pub const MAX_TARGET_TERMINALS: usize = 1024;

macro_rules! byte_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $n:expr,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v = $n,)+ }
        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];
            /// Wire value.
            pub const fn code(self) -> u8 { self as u8 }
            /// From a wire value.
            pub fn from_code(c: u8) -> Option<Self> {
                match c { $($n => Some($name::$v),)+ _ => None }
            }
        }
    };
}

byte_enum! {
    /// What an alert asks of its recipients.
    AlertKind {
        /// A task to act on (派单): accept, go, arrive, resolve.
        Dispatch = 1,
        /// Information.
        Notice = 2,
        /// A warning (预警): be on the lookout.
        Warning = 3,
        /// A drill (拉动演练): answered like a dispatch, timed.
        Drill = 4,
        /// An SOS raised by a terminal (紧急求助).
        Sos = 5,
        /// A work report pushed up by a member to its station (工作上报).
        Report = 6,
        /// A clue pushed up by a member to its station (发布线索).
        Clue = 7,
    }
}

byte_enum! {
    /// How far a recipient got with an alert. Ordered: a receipt never
    /// moves a recipient backwards.
    ReceiptStatus {
        /// Stored, not yet delivered (never sent by terminals).
        Pending = 0,
        /// The terminal has it (sent automatically by the terminal library).
        Delivered = 1,
        /// A person opened it.
        Read = 2,
        /// Accepted the task.
        Accepted = 3,
        /// Declined, with a reason.
        Rejected = 4,
        /// On the scene.
        Arrived = 5,
        /// Done.
        Resolved = 6,
    }
}

/// Where something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Latitude in 1e-7 degrees (WGS 84).
    pub lat_e7: i32,
    /// Longitude in 1e-7 degrees.
    pub lon_e7: i32,
    /// Street address, e.g. "城南路165号".
    pub address: String,
}

/// Largest attachment: 4 MiB.
pub const MAX_ATTACHMENT: u32 = 4 * 1024 * 1024;
/// Most attachments on one alert.
pub const MAX_ATTACHMENTS: usize = 8;
/// Longest media type, e.g. `image/jpeg`.
pub const MAX_MIME: usize = 64;

/// An attachment an alert carries (a photo), uploaded beforehand on a
/// stream of its own (`AttachmentPut`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    /// Id from `AttachmentStored`.
    pub id: u64,
    /// Size in bytes (filled in by the gateway; senders may leave 0).
    pub size: u32,
    /// Media type (filled in by the gateway; senders may leave it empty).
    pub mime: String,
}

impl AlertKind {
    /// Whether this kind is pushed up by a member (a report or a clue)
    /// rather than down by a console.
    pub fn is_upward(self) -> bool {
        matches!(self, AlertKind::Report | AlertKind::Clue)
    }
}

/// The content of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertBody {
    /// What it asks.
    pub kind: AlertKind,
    /// 0 (routine) to 3 (urgent).
    pub priority: u8,
    /// Seconds it stays deliverable to terminals that are offline.
    pub ttl_s: u32,
    /// Title, at most [`MAX_TITLE`] bytes.
    pub title: String,
    /// Text, at most [`MAX_TEXT`] bytes.
    pub text: String,
    /// Incident location, if any.
    pub location: Option<Location>,
    /// Photos, at most [`MAX_ATTACHMENTS`].
    pub attachments: Vec<AttachmentRef>,
}

/// Who an alert is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// These terminals (1 to [`MAX_TARGET_TERMINALS`]).
    Terminals(Vec<TerminalId>),
    /// The members of a node's own group: terminals belonging to that node.
    Group(GroupId),
    /// Every terminal at or under a node, optionally only some roles
    /// (bit set: 1 police, 2 auxiliary police, 4 security guard, 8 staff,
    /// 16 volunteer, 32 dispatcher; 0 = all).
    Subtree {
        /// The node.
        node: u32,
        /// Role filter.
        roles: u8,
    },
    /// The `k` nearest members online within `radius_m` metres of the
    /// alert's location, by their last reported position (就近处置).
    Nearest {
        /// How many (1 to [`MAX_NEAREST`]).
        k: u16,
        /// Search radius in metres (1 to [`MAX_RADIUS_M`]).
        radius_m: u32,
    },
    /// Upward: the consoles of the sender's own station, the nearest node
    /// above the sender that has consoles (reports and clues).
    Station,
}

/// Most terminals a nearest-members target picks.
pub const MAX_NEAREST: u16 = 100;

/// Largest nearest-members search radius: 50 km, a whole city.
pub const MAX_RADIUS_M: u32 = 50_000;

fn put_str(out: &mut BytesMut, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

impl AlertBody {
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        b.put_u8(self.kind.code());
        b.put_u8(self.priority);
        b.put_u32(self.ttl_s);
        put_str(b, &self.title, MAX_TITLE);
        put_str(b, &self.text, MAX_TEXT);
        match &self.location {
            None => b.put_u8(0),
            Some(l) => {
                b.put_u8(1);
                b.put_i32(l.lat_e7);
                b.put_i32(l.lon_e7);
                put_str(b, &l.address, MAX_ADDRESS);
            }
        }
        let n = self.attachments.len().min(MAX_ATTACHMENTS);
        b.put_u8(n as u8);
        for a in &self.attachments[..n] {
            b.put_u64(a.id);
            b.put_u32(a.size);
            put_str(b, &a.mime, MAX_MIME);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let kind = AlertKind::from_code(r.u8()?).ok_or(Malformed::InvalidValue("alert kind"))?;
        let priority = r.u8()?;
        if priority > 3 {
            return Err(Malformed::InvalidValue("alert priority"));
        }
        let ttl_s = r.u32()?;
        let title = r.string(MAX_TITLE)?;
        let text = r.string(MAX_TEXT)?;
        let location = match r.u8()? {
            0 => None,
            1 => {
                let lat_e7 = r.u32()? as i32;
                let lon_e7 = r.u32()? as i32;
                if !(-900_000_000..=900_000_000).contains(&lat_e7)
                    || !(-1_800_000_000..=1_800_000_000).contains(&lon_e7)
                {
                    return Err(Malformed::InvalidValue("coordinates"));
                }
                Some(Location {
                    lat_e7,
                    lon_e7,
                    address: r.string(MAX_ADDRESS)?,
                })
            }
            _ => return Err(Malformed::InvalidValue("location flag")),
        };
        let n = usize::from(r.u8()?);
        if n > MAX_ATTACHMENTS {
            return Err(Malformed::InvalidValue("attachment count"));
        }
        let mut attachments = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u64()?;
            let size = r.u32()?;
            if id == 0 || size > MAX_ATTACHMENT {
                return Err(Malformed::InvalidValue("attachment"));
            }
            attachments.push(AttachmentRef {
                id,
                size,
                mime: r.string(MAX_MIME)?,
            });
        }
        Ok(AlertBody {
            kind,
            priority,
            ttl_s,
            title,
            text,
            location,
            attachments,
        })
    }
}

impl Target {
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        match self {
            Target::Terminals(ids) => {
                b.put_u8(1);
                let n = ids.len().min(MAX_TARGET_TERMINALS);
                b.put_u16(n as u16);
                for t in &ids[..n] {
                    b.put_u32(t.0);
                }
            }
            Target::Group(g) => {
                b.put_u8(2);
                b.put_u32(g.0);
            }
            Target::Subtree { node, roles } => {
                b.put_u8(3);
                b.put_u32(*node);
                b.put_u8(*roles);
            }
            Target::Nearest { k, radius_m } => {
                b.put_u8(4);
                b.put_u16(*k);
                b.put_u32(*radius_m);
            }
            Target::Station => b.put_u8(5),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        match r.u8()? {
            1 => {
                let n = usize::from(r.u16()?);
                if n == 0 || n > MAX_TARGET_TERMINALS {
                    return Err(Malformed::InvalidValue("target terminal count"));
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    match r.u32()? {
                        0 => return Err(Malformed::InvalidValue("terminal 0")),
                        t => ids.push(TerminalId(t)),
                    }
                }
                Ok(Target::Terminals(ids))
            }
            2 => match r.u32()? {
                0 => Err(Malformed::InvalidValue("group 0")),
                g => Ok(Target::Group(GroupId(g))),
            },
            3 => {
                let node = r.u32()?;
                let roles = r.u8()?;
                if node == 0 || roles & 0xc0 != 0 {
                    return Err(Malformed::InvalidValue("subtree target"));
                }
                Ok(Target::Subtree { node, roles })
            }
            4 => {
                let k = r.u16()?;
                let radius_m = r.u32()?;
                if k == 0 || k > MAX_NEAREST || radius_m == 0 || radius_m > MAX_RADIUS_M {
                    return Err(Malformed::InvalidValue("nearest target"));
                }
                Ok(Target::Nearest { k, radius_m })
            }
            5 => Ok(Target::Station),
            _ => Err(Malformed::InvalidValue("target type")),
        }
    }
}

/// Counts of recipients by status, in `AlertStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusCounts {
    /// Indexed by [`ReceiptStatus::code`].
    pub by_status: [u32; 7],
    /// Recipients that never got it before it expired.
    pub expired: u32,
}

impl StatusCounts {
    pub(crate) fn encode(&self, b: &mut BytesMut) {
        for n in self.by_status {
            b.put_u32(n);
        }
        b.put_u32(self.expired);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Malformed> {
        let mut by_status = [0u32; 7];
        for n in &mut by_status {
            *n = r.u32()?;
        }
        Ok(StatusCounts {
            by_status,
            expired: r.u32()?,
        })
    }
}
