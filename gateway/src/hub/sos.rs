//! The SOS book: every SOS raised and not yet cancelled.

use std::collections::HashMap;
use std::sync::Mutex;

use ptt_codec::{GroupId, TerminalId};

/// An SOS not yet cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Active {
    /// Its alert.
    pub(crate) alert: u64,
    /// The unit group whose floor it took for the hot mic.
    pub(crate) group: GroupId,
    /// Who was alerted, to be told of a cancel.
    pub(crate) recipients: Vec<TerminalId>,
}

/// Active SOS per terminal (at most one each).
#[derive(Debug, Default)]
pub(crate) struct Book {
    active: Mutex<HashMap<TerminalId, Active>>,
}

impl Book {
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
    use super::*;

    #[test]
    fn an_sos_is_taken_once() {
        let book = Book::default();
        let sos = |alert| Active {
            alert,
            group: GroupId(5),
            recipients: vec![TerminalId(2)],
        };
        assert_eq!(book.take(TerminalId(1)), None);
        book.raise(TerminalId(1), sos(10));
        book.raise(TerminalId(1), sos(11));
        assert_eq!(book.take(TerminalId(1)), Some(sos(11)), "the newer one");
        assert_eq!(book.take(TerminalId(1)), None);
    }
}
