//! Alert rules: the lifecycle of one recipient's receipt, and the limits an
//! alert must respect.
//!
//! A recipient moves forward only: pending -> delivered -> read -> accepted
//! -> arrived -> resolved, skipping steps if it likes (a terminal that was
//! offline may report "arrived" first), or ends at rejected before accepting.
//! A receipt at or behind the current status is a duplicate: acknowledged
//! again, changing nothing, so a terminal can safely resend receipts it is
//! unsure were stored.

use bytes::Bytes;
use ptt_codec::{AlertBody, ReceiptStatus, TerminalId};

/// Longest time-to-live: a week. An alert nobody picked up in a week is an
/// archive entry, not an alert.
pub const MAX_TTL_S: u32 = 7 * 24 * 3600;

/// What a receipt does to a recipient's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The status moves forward to the receipt's.
    Advance,
    /// Already there or beyond: nothing changes, acknowledge again.
    Duplicate,
}

/// A receipt that contradicts the recipient's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot go from {from:?} to {to:?}")]
pub struct InvalidReceipt {
    /// Current status.
    pub from: ReceiptStatus,
    /// Receipt's status.
    pub to: ReceiptStatus,
}

/// Position on the forward path; `None` for rejected.
fn rank(s: ReceiptStatus) -> Option<u8> {
    match s {
        ReceiptStatus::Pending => Some(0),
        ReceiptStatus::Delivered => Some(1),
        ReceiptStatus::Read => Some(2),
        ReceiptStatus::Accepted => Some(3),
        ReceiptStatus::Arrived => Some(4),
        ReceiptStatus::Resolved => Some(5),
        ReceiptStatus::Rejected => None,
    }
}

/// Applies a receipt `to` to a recipient at `from`. Call it before storing
/// a receipt: `Advance` means store it, `Duplicate` means answer with the
/// stored status.
pub fn advance(from: ReceiptStatus, to: ReceiptStatus) -> Result<Step, InvalidReceipt> {
    let invalid = InvalidReceipt { from, to };
    match (rank(from), rank(to)) {
        (None, None) => Ok(Step::Duplicate),
        (None, Some(_)) => Err(invalid),
        // Rejecting is possible until the task was accepted.
        (Some(f), None) => {
            if f < rank(ReceiptStatus::Accepted).unwrap_or(3) {
                Ok(Step::Advance)
            } else {
                Err(invalid)
            }
        }
        (Some(f), Some(t)) if t <= f => Ok(Step::Duplicate),
        (Some(_), Some(_)) => Ok(Step::Advance),
    }
}

/// A stored attachment (a photo uploaded by a terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Id.
    pub id: u64,
    /// Who uploaded it.
    pub owner: TerminalId,
    /// Media type.
    pub mime: String,
    /// Content.
    pub data: Bytes,
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// Id.
    pub id: u64,
    /// Issuer.
    pub issuer: TerminalId,
    /// Content.
    pub body: AlertBody,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
}

/// A receipt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptIn {
    /// The alert.
    pub alert: u64,
    /// The recipient.
    pub terminal: TerminalId,
    /// Its new status.
    pub status: ReceiptStatus,
    /// When, Unix ms.
    pub at_ms: u64,
    /// Reason (rejections).
    pub reason: String,
}

/// What recording a receipt did: the outcome of [`advance`] against the
/// stored status, or why there was nothing to advance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Stored; the recipient's status is now `status` (tell the issuer).
    Advanced {
        /// The alert's issuer.
        issuer: TerminalId,
        /// The new status.
        status: ReceiptStatus,
    },
    /// Already recorded; the stored status is `status`.
    Duplicate {
        /// The stored status.
        status: ReceiptStatus,
    },
    /// No such alert.
    UnknownAlert,
    /// The terminal is not a recipient.
    NotRecipient,
    /// Contradicts the recipient's history.
    Invalid(InvalidReceipt),
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReceiptStatus::*;

    #[test]
    fn receipts_only_move_forward() {
        assert_eq!(advance(Pending, Delivered), Ok(Step::Advance));
        assert_eq!(
            advance(Delivered, Arrived),
            Ok(Step::Advance),
            "steps may be skipped"
        );
        assert_eq!(
            advance(Arrived, Read),
            Ok(Step::Duplicate),
            "late receipts change nothing"
        );
        assert_eq!(advance(Accepted, Accepted), Ok(Step::Duplicate));
        assert_eq!(advance(Read, Rejected), Ok(Step::Advance));
        assert_eq!(advance(Pending, Rejected), Ok(Step::Advance));
        assert_eq!(advance(Rejected, Rejected), Ok(Step::Duplicate));
        assert!(advance(Rejected, Accepted).is_err());
        assert!(advance(Rejected, Delivered).is_err());
        assert!(advance(Accepted, Rejected).is_err());
        assert!(advance(Resolved, Rejected).is_err());
    }
}
