//! The SOS book: every SOS raised and not yet cancelled, one per terminal,
//! a copy of the store's `active_sos` table loaded when the gateway starts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ptt_codec::TerminalId;

use super::warn;
pub(crate) use ptt_gateway_core::sos::Active;

/// Active SOS per terminal (at most one each).
#[derive(Debug, Default)]
pub(crate) struct Book {
    active: Mutex<HashMap<TerminalId, Active>>,
    /// One lock per terminal that pressed SOS, held while its SOS is raised,
    /// refreshed or cancelled, so that presses arriving together make one
    /// alert. Only terminals of the org get one.
    turns: Mutex<HashMap<TerminalId, Arc<tokio::sync::Mutex<()>>>>,
    /// Emergency-class refusal warnings (Unix ms clock).
    warned: warn::Gate,
}

impl Book {
    /// The book holding `active`, the store's active SOS: call once at start.
    pub(crate) fn new(active: impl IntoIterator<Item = (TerminalId, Active)>) -> Self {
        Self {
            active: Mutex::new(active.into_iter().collect()),
            turns: Mutex::default(),
            warned: warn::Gate::default(),
        }
    }

    /// Whether an emergency-class refusal may be logged now (one per
    /// [`warn::EVERY_MS`]).
    pub(crate) fn warn_due(&self, now_ms: u64) -> bool {
        self.warned.due(now_ms)
    }

    /// Waits until no other press or cancel of `terminal`'s SOS is under
    /// way; hold the guard while reading and changing its SOS (book and
    /// store).
    pub(crate) async fn turn(&self, terminal: TerminalId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(terminal)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// `terminal`'s active SOS, if it has one.
    pub(crate) fn get(&self, terminal: TerminalId) -> Option<Active> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&terminal)
            .cloned()
    }

    /// Records `terminal`'s SOS, replacing an older one.
    pub(crate) fn raise(&self, terminal: TerminalId, sos: Active) {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(terminal, sos);
    }

    /// Removes and returns `terminal`'s SOS, if it has one.
    pub(crate) fn take(&self, terminal: TerminalId) -> Option<Active> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&terminal)
    }
}

#[cfg(test)]
mod tests {
    use ptt_codec::GroupId;

    use super::*;

    fn sos(alert: u64) -> Active {
        Active {
            alert,
            group: GroupId(5),
            recipients: vec![TerminalId(2)],
            expires_ms: 1_000,
        }
    }

    #[test]
    fn an_sos_is_taken_once() {
        let book = Book::default();
        assert_eq!(book.take(TerminalId(1)), None);
        book.raise(TerminalId(1), sos(10));
        book.raise(TerminalId(1), sos(11));
        assert_eq!(book.get(TerminalId(1)), Some(sos(11)), "the newer one");
        assert_eq!(book.take(TerminalId(1)), Some(sos(11)));
        assert_eq!(book.take(TerminalId(1)), None);
    }

    #[test]
    fn the_book_starts_with_the_stored_sos() {
        let book = Book::new([(TerminalId(1), sos(10))]);
        assert_eq!(book.take(TerminalId(1)), Some(sos(10)));
    }
}
