//! What nodes say to each other on NATS, and its encoding: JSON, because
//! these are control messages at human rates (joins, floor requests, the
//! arbiter's answers), never per voice frame; a terminal's control messages
//! travel inside as their protocol frames, hex-encoded.
//!
//! Every decoder here is fed by other nodes only, on an authenticated NATS;
//! it still bounds what it accepts and never panics (tests below).

use bytes::BytesMut;
use ptt_codec::{Class, GroupId, ServerMsg, TerminalId};
use serde::{Deserialize, Serialize};

/// The largest envelope accepted, bytes (NATS's default max payload is 1 MiB).
pub(crate) const MAX_ENVELOPE: usize = 1 << 20;

/// A message from another node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// Larger than [`MAX_ENVELOPE`].
    #[error("{0} bytes is over the limit")]
    TooLarge(usize),
    /// Not the JSON of a known message.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A terminal's message inside did not decode.
    #[error("a control frame inside: {0}")]
    Frame(String),
}

/// A node's heartbeat on `ptt.hb`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    /// The node's name.
    pub node: String,
    /// Chosen at each start.
    pub incarnation: u64,
    /// The node is shutting down and grants nothing any more.
    #[serde(default)]
    pub leaving: bool,
}

impl Heartbeat {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a heartbeat serialises")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > 1024 {
            return Err(Malformed::TooLarge(bytes.len()));
        }
        let hb: Heartbeat = serde_json::from_slice(bytes)?;
        if hb.node.is_empty() || hb.node.len() > 32 {
            return Err(Malformed::Frame("bad node name".into()));
        }
        Ok(hb)
    }
}

/// A terminal's position report, published on `ptt.pos` by its node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Position {
    /// The terminal.
    pub terminal: u32,
    /// Latitude, 1e-7 degrees.
    pub lat_e7: i32,
    /// Longitude, 1e-7 degrees.
    pub lon_e7: i32,
    /// Accuracy, metres.
    pub accuracy_m: u16,
    /// When its node received it, Unix ms.
    pub at_ms: u64,
}

impl Position {
    pub(crate) fn from_fix(terminal: TerminalId, fix: crate::location::Fix) -> Self {
        Self {
            terminal: terminal.0,
            lat_e7: fix.lat_e7,
            lon_e7: fix.lon_e7,
            accuracy_m: fix.accuracy_m,
            at_ms: fix.at_ms,
        }
    }

    pub(crate) fn into_fix(self) -> (TerminalId, crate::location::Fix) {
        (
            TerminalId(self.terminal),
            crate::location::Fix {
                lat_e7: self.lat_e7,
                lon_e7: self.lon_e7,
                accuracy_m: self.accuracy_m,
                at_ms: self.at_ms,
            },
        )
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position serialises")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > 1024 {
            return Err(Malformed::TooLarge(bytes.len()));
        }
        let p: Position = serde_json::from_slice(bytes)?;
        let valid = (-900_000_000..=900_000_000).contains(&p.lat_e7)
            && (-1_800_000_000..=1_800_000_000).contains(&p.lon_e7);
        if !valid {
            return Err(Malformed::Frame("position out of range".into()));
        }
        Ok(p)
    }
}

/// Which terminals are connected to a node, published on `ptt.presence`:
/// each change, and the whole list (`full`) when another node joins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Presence {
    /// The node.
    pub node: String,
    /// Terminals now connected to it.
    pub online: Vec<u32>,
    /// Terminals no longer connected to it.
    pub offline: Vec<u32>,
    /// `online` is everything the node has: forget what it said before.
    pub full: bool,
}

impl Presence {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("presence serialises")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(Malformed::TooLarge(bytes.len()));
        }
        let p: Presence = serde_json::from_slice(bytes)?;
        if p.node.is_empty() || p.node.len() > 32 {
            return Err(Malformed::Frame("bad node name".into()));
        }
        Ok(p)
    }
}

/// A message to one node's inbox (`ptt.node.<name>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Envelope {
    /// To a group's arbiter: a terminal on node `from` is online in the
    /// group (or its session was replaced).
    Attach {
        /// The group.
        group: u32,
        /// The terminal.
        terminal: u32,
        /// Its node.
        from: String,
        /// May request the floor.
        talk: bool,
        /// Floor priority.
        priority: u8,
        /// Display name.
        name: String,
        /// Session id on its node.
        session: u64,
        /// Send it `Joined`.
        announce: bool,
    },
    /// To a group's arbiter: the terminal's session went offline.
    Detach {
        /// The group.
        group: u32,
        /// The terminal.
        terminal: u32,
        /// The session that left.
        session: u64,
    },
    /// To a group's arbiter: a talk key pressed.
    Request {
        /// The group.
        group: u32,
        /// The terminal.
        terminal: u32,
        /// Its node, for a refusal.
        from: String,
        /// The class (`ptt_codec::Class` code).
        class: u8,
        /// Its own talk-time limit (an SOS hot mic), ms.
        limit_ms: Option<u64>,
    },
    /// To a group's arbiter: a talk key released.
    Release {
        /// The group.
        group: u32,
        /// The terminal.
        terminal: u32,
    },
    /// From a group's arbiter: the floor as it is now, and messages for
    /// terminals on the receiving node, in order.
    Deliver {
        /// The group.
        group: u32,
        /// Who talks now: terminal and burst.
        talker: Option<(u32, u16)>,
        /// Each a terminal and one control frame for it, hex.
        messages: Vec<(u32, String)>,
    },
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        if bytes.len() > MAX_ENVELOPE {
            return Err(Malformed::TooLarge(bytes.len()));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The group it is about.
    pub(crate) fn group(&self) -> GroupId {
        GroupId(match self {
            Envelope::Attach { group, .. }
            | Envelope::Detach { group, .. }
            | Envelope::Request { group, .. }
            | Envelope::Release { group, .. }
            | Envelope::Deliver { group, .. } => *group,
        })
    }
}

/// One control message as it travels in a [`Envelope::Deliver`].
pub(crate) fn encode_msg(to: TerminalId, msg: &ServerMsg) -> (u32, String) {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    (to.0, hex::encode(out))
}

/// The control message of a [`Envelope::Deliver`] entry.
pub(crate) fn decode_msg(frame: &str) -> Result<ServerMsg, Malformed> {
    let bytes = hex::decode(frame).map_err(|e| Malformed::Frame(e.to_string()))?;
    let raw =
        ptt_codec::control::split_frame(&bytes).map_err(|e| Malformed::Frame(format!("{e:?}")))?;
    if raw.len() != bytes.len() {
        return Err(Malformed::Frame("trailing bytes".into()));
    }
    ServerMsg::decode(raw).map_err(|e| Malformed::Frame(e.to_string()))
}

/// The class of a [`Envelope::Request`].
pub(crate) fn class(code: u8) -> Option<Class> {
    Class::from_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::{DenyCause, RevokeCause};

    #[test]
    fn envelopes_round_trip() {
        let all = [
            Envelope::Attach {
                group: 7,
                terminal: 9,
                from: "b".into(),
                talk: true,
                priority: 3,
                name: "张三".into(),
                session: 12,
                announce: true,
            },
            Envelope::Detach {
                group: 7,
                terminal: 9,
                session: 12,
            },
            Envelope::Request {
                group: 7,
                terminal: 9,
                from: "b".into(),
                class: 2,
                limit_ms: Some(30_000),
            },
            Envelope::Release {
                group: 7,
                terminal: 9,
            },
            Envelope::Deliver {
                group: 7,
                talker: Some((9, 4)),
                messages: vec![encode_msg(
                    TerminalId(9),
                    &ServerMsg::FloorRevoked {
                        group: GroupId(7),
                        burst: 4,
                        cause: RevokeCause::ArbiterLost,
                    },
                )],
            },
        ];
        for e in all {
            assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
            assert_eq!(e.group(), GroupId(7));
        }
    }

    #[test]
    fn messages_inside_round_trip() {
        let msg = ServerMsg::FloorDenied {
            group: GroupId(3),
            cause: DenyCause::ArbiterUnavailable,
        };
        let (to, hex) = encode_msg(TerminalId(5), &msg);
        assert_eq!(to, 5);
        assert_eq!(decode_msg(&hex).unwrap(), msg);
    }

    #[test]
    fn hostile_input_is_refused_without_panicking() {
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"{\"t\":\"attach\"}",
            b"{\"t\":\"nope\",\"group\":1}",
            b"{\"t\":\"release\",\"group\":-1,\"terminal\":1}",
            b"{\"t\":\"deliver\",\"group\":1,\"talker\":[1,70000],\"messages\":[]}",
        ] {
            assert!(
                Envelope::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            Envelope::decode(&vec![b' '; MAX_ENVELOPE + 1]),
            Err(Malformed::TooLarge(_))
        ));
        for frame in ["", "zz", "00", "ffffffff", "0a00"] {
            assert!(decode_msg(frame).is_err(), "{frame}");
        }
        // A valid frame followed by garbage is refused whole.
        let (_, ok) = encode_msg(TerminalId(1), &ServerMsg::FloorIdle { group: GroupId(1) });
        assert!(decode_msg(&format!("{ok}00")).is_err());
        assert!(Heartbeat::decode(b"{\"node\":\"\",\"incarnation\":1}").is_err());
        assert!(Heartbeat::decode(&[b'x'; 2000]).is_err());
        assert!(Heartbeat::decode(b"{\"node\":\"a\",\"incarnation\":-1}").is_err());
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let p = Position {
            terminal: 7,
            lat_e7: 291_000_000,
            lon_e7: 1_196_000_000,
            accuracy_m: 8,
            at_ms: 1,
        };
        assert_eq!(Position::decode(&p.encode()).unwrap(), p);
        let far = Position {
            lat_e7: 950_000_000,
            ..p.clone()
        };
        assert!(Position::decode(&far.encode()).is_err());
        assert!(Position::decode(b"{\"terminal\":1}").is_err());
    }

    #[test]
    fn presence_round_trips_and_bad_names_are_refused() {
        let p = Presence {
            node: "b".into(),
            online: vec![1, 2],
            offline: vec![3],
            full: false,
        };
        assert_eq!(Presence::decode(&p.encode()).unwrap(), p);
        let unnamed = Presence {
            node: String::new(),
            ..p
        };
        assert!(Presence::decode(&unnamed.encode()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Envelope::decode(&bytes);
            let _ = Heartbeat::decode(&bytes);
            let _ = Position::decode(&bytes);
            let _ = Presence::decode(&bytes);
            let _ = decode_msg(&String::from_utf8_lossy(&bytes));
        }
    }
}
