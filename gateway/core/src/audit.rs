//! The floor audit log's rows: who talked in which group, when, for how
//! long, and how the burst ended.

use std::fmt;
use std::str::FromStr;

use ptt_codec::{RevokeCause, TerminalId};

/// How a burst ended. Stored as text ([`EndedBy::as_str`]); the strings are
/// part of the database format and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndedBy {
    /// The talker released the floor (`"released"`).
    Released,
    /// The talker left the group or disconnected (`"left"`).
    Left,
    /// A higher-priority request took the floor (`"preempted"`).
    Preempted,
    /// The talk limit (T2) ran out (`"burst_too_long"`).
    BurstTooLong,
    /// Revoked for another cause (`"revoked"`).
    Revoked,
}

impl EndedBy {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Released => "released",
            EndedBy::Left => "left",
            EndedBy::Preempted => "preempted",
            EndedBy::BurstTooLong => "burst_too_long",
            EndedBy::Revoked => "revoked",
        }
    }
}

impl From<RevokeCause> for EndedBy {
    /// How a burst the floor revoked with `cause` ended.
    fn from(cause: RevokeCause) -> Self {
        match cause {
            RevokeCause::Preempted => EndedBy::Preempted,
            RevokeCause::BurstTooLong => EndedBy::BurstTooLong,
            _ => EndedBy::Revoked,
        }
    }
}

impl fmt::Display for EndedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored text that names no [`EndedBy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown way for a burst to end: {0:?}")]
pub struct UnknownEndedBy(pub String);

impl FromStr for EndedBy {
    type Err = UnknownEndedBy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "released" => EndedBy::Released,
            "left" => EndedBy::Left,
            "preempted" => EndedBy::Preempted,
            "burst_too_long" => EndedBy::BurstTooLong,
            "revoked" => EndedBy::Revoked,
            other => return Err(UnknownEndedBy(other.to_owned())),
        })
    }
}

/// One burst, for the floor audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BurstRecord {
    /// The group.
    pub group: u32,
    /// Who talked.
    pub terminal: TerminalId,
    /// Burst id.
    pub burst: u16,
    /// Class code (0 normal, 1 imminent peril, 2 emergency).
    pub class: u8,
    /// Unix ms.
    pub granted_ms: u64,
    /// Unix ms.
    pub ended_ms: u64,
    /// How it ended.
    pub ended_by: EndedBy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_reads_back() {
        for e in [
            EndedBy::Released,
            EndedBy::Left,
            EndedBy::Preempted,
            EndedBy::BurstTooLong,
            EndedBy::Revoked,
        ] {
            assert_eq!(e.as_str().parse::<EndedBy>(), Ok(e));
        }
        assert!("talked".parse::<EndedBy>().is_err());
        assert_eq!(EndedBy::from(RevokeCause::Preempted), EndedBy::Preempted);
        assert_eq!(
            EndedBy::from(RevokeCause::BurstTooLong),
            EndedBy::BurstTooLong
        );
    }
}
