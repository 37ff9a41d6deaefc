//! Control messages waiting to be written to one terminal.
//!
//! A leaf: it knows the codec, the channel and the connection it closes when
//! the terminal stops reading, and nothing of sessions or groups, so groups,
//! alerts and sessions can all send through it without importing each other.

use ptt_codec::{CloseCode, ServerMsg};
use quinn::Connection;
use tokio::sync::mpsc;

/// Control messages waiting to be written to one terminal.
///
/// Sending never blocks the caller: when the queue is full the terminal is
/// not reading and is disconnected, rather than letting its backlog grow or
/// silently losing floor messages.
///
/// Messages are queued boxed: a channel allocates its slots in blocks of 32,
/// and 32 unboxed `ServerMsg`s are 4.5 KB that every idle connection would
/// carry for nothing (a tenth of its memory; heaptrack at 8,815 connections).
///
/// Built by the session, which keeps the receiving end for its write loop.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The queue the session's write loop drains.
    pub(crate) tx: mpsc::Sender<Box<ServerMsg>>,
    /// Closed when the queue overflows.
    pub(crate) conn: Connection,
}

impl Outbox {
    /// An outbox of `capacity` messages for `conn`, and the receiver its
    /// session's write loop drains.
    pub(crate) fn new(conn: Connection, capacity: usize) -> (Self, mpsc::Receiver<Box<ServerMsg>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, conn }, rx)
    }

    /// Queues a message the terminal can do without when it falls behind
    /// (a live receipt update: `AlertStatus` stays authoritative). Dropped
    /// once the queue is half full, so a city-wide alert's 100,000 receipts
    /// never push out floor messages or disconnect the issuing console.
    /// Returns whether it was queued.
    pub fn send_droppable(&self, msg: ServerMsg) -> bool {
        if self.tx.capacity() * 2 < self.tx.max_capacity() {
            return false;
        }
        self.send(msg);
        true
    }

    /// Queues `msg` for the terminal.
    pub fn send(&self, msg: ServerMsg) {
        match self.tx.try_send(Box::new(msg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                close(&self.conn, CloseCode::TooSlow, "control stream not read");
            }
            // The session is ending; its cleanup tells the groups.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Closes `conn` with `code` and `reason`.
pub(crate) fn close(conn: &Connection, code: CloseCode, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code.code()), reason.as_bytes());
}
