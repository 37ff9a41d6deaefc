//! Last known positions, and the consoles following them.

use std::sync::Mutex;

use ptt_codec::TerminalId;

use crate::location::{Fix, Positions};
use crate::outbox::Outbox;

/// A console following positions under a node.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// The console.
    pub(crate) terminal: TerminalId,
    /// Its session: the watch ends with it.
    pub(crate) session: u64,
    /// The node whose subtree it follows.
    pub(crate) node: u32,
    /// Where updates go.
    pub(crate) outbox: Outbox,
}

/// Positions and their watchers.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    positions: Positions,
    watchers: Mutex<Vec<Watcher>>,
}

impl Watch {
    /// The positions, indexed.
    pub(crate) fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Remembers `fix` as `terminal`'s position.
    pub(crate) fn update(&self, terminal: TerminalId, fix: Fix) {
        self.positions.update(terminal, fix);
    }

    /// The last position of `terminal`, if it sent one.
    pub(crate) fn last(&self, terminal: TerminalId) -> Option<Fix> {
        self.positions.last(terminal)
    }

    /// Calls `f` with every watcher, under the watchers' lock (`f` must not
    /// block).
    pub(crate) fn each_watcher(&self, mut f: impl FnMut(&Watcher)) {
        let watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.iter().for_each(&mut f);
    }

    /// Adds `watcher`, replacing any watch of its session.
    pub(crate) fn watch(&self, watcher: Watcher) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| w.session != watcher.session);
        watchers.push(watcher);
    }

    /// Ends the watch of `session`, if any.
    pub(crate) fn unwatch(&self, session: u64) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| w.session != session);
    }
}
