//! What the gateway tells a terminal, as the terminal's helpers return it:
//! answers, received voice and alerts, downloads.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ptt_codec::{AlertBody, DenyCause, Membership, TerminalId, VoiceHeader};

/// What `Welcome` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// This terminal.
    pub terminal: TerminalId,
    /// Its display name.
    pub name: String,
    /// Whether an earlier session's groups were restored.
    pub resumed: bool,
    /// Groups the terminal is in.
    pub groups: Vec<Membership>,
}

/// What `Joined` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// May this terminal talk there.
    pub talk: bool,
    /// The group's name.
    pub name: String,
    /// Members online.
    pub online: Vec<TerminalId>,
}

/// Outcome of asking for the floor without waiting for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorAnswer {
    /// Granted with this burst id.
    Granted(u16),
    /// Queued at this position; a `FloorGranted` follows later.
    Queued(u16),
    /// Denied.
    Denied(DenyCause),
}

/// One voice frame received.
#[derive(Debug, Clone)]
pub struct Voice {
    /// Parsed header (speaker stamped by the gateway).
    pub header: VoiceHeader,
    /// The whole datagram; `opus()` is the payload.
    pub datagram: Bytes,
}

impl Voice {
    /// The Opus packet.
    pub fn opus(&self) -> &[u8] {
        &self.datagram[ptt_codec::voice::VOICE_HEADER_LEN..]
    }
}

/// Ids of alerts already shown, so a redelivered alert is shown once. Keep
/// it across reconnects ([`Terminal::connect_with_seen`](crate::Terminal::connect_with_seen)).
#[derive(Debug, Clone, Default)]
pub struct SeenAlerts(Arc<Mutex<HashSet<u64>>>);

impl SeenAlerts {
    /// Marks `alert` seen; true if it was new.
    pub fn insert(&self, alert: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alert)
    }

    /// How many distinct alerts were shown.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An alert as the terminal shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAlert {
    /// Id.
    pub alert: u64,
    /// Issuer.
    pub issuer: TerminalId,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
    /// Content.
    pub body: AlertBody,
}

/// Content the gateway sent on a stream of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// An attachment: pushed with an alert (screens and consoles) or
    /// fetched with [`Terminal::fetch_attachment`](crate::Terminal::fetch_attachment).
    Attachment {
        /// The attachment.
        attachment: u64,
        /// The alert it came with (0: fetched by its uploader).
        alert: u64,
        /// Media type.
        mime: String,
        /// Content.
        data: Bytes,
    },
    /// A drill report, JSON.
    DrillReport {
        /// The drill.
        alert: u64,
        /// The report.
        json: String,
    },
}
