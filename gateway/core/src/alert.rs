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

/// The receipt rule is the codec's, so the gateway and every terminal apply
/// the same one: [`advance`] before storing a receipt.
pub use ptt_codec::receipt::{advance, InvalidReceipt, Step};

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
