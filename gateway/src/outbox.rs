//! The queue of control messages to one terminal: the leaf every layer
//! above (groups, the hub, operations, sessions) sends through.

use ptt_codec::{CloseCode, ServerMsg};
use quinn::Connection;
use tokio::sync::mpsc;

/// Control messages waiting to be written to one terminal.
///
/// Sending never blocks the caller (group code holds a lock): when the queue
/// is full the terminal is not reading and is disconnected, rather than
/// letting its backlog grow or silently losing floor messages.
///
/// Messages are queued boxed: a channel allocates its slots in blocks of 32,
/// and 32 unboxed `ServerMsg`s are 4.5 KB that every idle connection would
/// carry for nothing (a tenth of its memory; heaptrack at 8,815 connections).
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Box<ServerMsg>>,
    conn: Connection,
}

impl Outbox {
    /// An outbox of `capacity` messages for `conn`, and the receiver its
    /// session's writer drains.
    pub fn new(conn: Connection, capacity: usize) -> (Self, mpsc::Receiver<Box<ServerMsg>>) {
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

/// Closes `conn` with `code`, telling the terminal `reason`.
pub fn close(conn: &Connection, code: CloseCode, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code.code()), reason.as_bytes());
}
