//! Slots for photo streams (attachment fetches and pushes): a few per
//! terminal and a bounded number across the gateway, so that a terminal
//! that asks for many photos, or never reads them, holds a bounded amount
//! of memory and database work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use ptt_codec::TerminalId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::warn;
use crate::config;

/// The slots of one terminal.
#[derive(Debug)]
struct Terminal {
    /// Its streams at once (`attachments.transfers_per_terminal`).
    slots: Arc<Semaphore>,
    /// Its fetches admitted and not finished (streaming or waiting).
    fetches: Arc<AtomicU32>,
    /// Warnings about it (clock: ms since the gateway started).
    warned: warn::Gate,
}

/// A photo stream's place: held while it streams, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    _terminal: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// A fetch admitted: counts against the terminal's fetches until dropped.
/// Get one with [`Transfers::admit_fetch`], then a [`Slot`] with
/// [`Transfers::fetch`].
#[derive(Debug)]
pub(crate) struct Ticket {
    terminal: Arc<Terminal>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.terminal.fetches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fetch refused because the terminal has too many waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

/// Photo stream slots, per terminal and gateway-wide.
#[derive(Debug)]
pub(crate) struct Transfers {
    per_terminal: u32,
    queued_fetches: u32,
    global: Arc<Semaphore>,
    terminals: DashMap<TerminalId, Arc<Terminal>>,
    started: std::time::Instant,
}

impl Transfers {
    /// Slots as `config` bounds them.
    pub(crate) fn new(config: &config::Attachments) -> Self {
        Self {
            per_terminal: config.transfers_per_terminal.max(1),
            queued_fetches: config.queued_fetches,
            global: Arc::new(Semaphore::new(config.transfers.max(1) as usize)),
            terminals: DashMap::new(),
            started: std::time::Instant::now(),
        }
    }

    fn terminal(&self, terminal: TerminalId) -> Arc<Terminal> {
        self.terminals
            .entry(terminal)
            .or_insert_with(|| {
                Arc::new(Terminal {
                    slots: Arc::new(Semaphore::new(self.per_terminal as usize)),
                    fetches: Arc::new(AtomicU32::new(0)),
                    warned: warn::Gate::default(),
                })
            })
            .clone()
    }

    /// Admits a fetch by `terminal` if it has fewer than
    /// `attachments.transfers_per_terminal` plus `attachments.queued_fetches`
    /// admitted already, else [`Busy`]. Call it on the control loop, before
    /// spawning anything for the fetch, so a flood of fetches costs no task.
    pub(crate) fn admit_fetch(&self, terminal: TerminalId) -> Result<Ticket, Busy> {
        let t = self.terminal(terminal);
        let bound = self.per_terminal.saturating_add(self.queued_fetches);
        let admitted = t.fetches.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket { terminal: t };
        if admitted >= bound {
            return Err(Busy);
        }
        Ok(ticket)
    }

    /// A slot for an admitted fetch: at once if one is free, else when one
    /// is. The `bool` says whether it waited.
    pub(crate) async fn fetch(&self, ticket: &Ticket) -> (Slot, bool) {
        match self.try_slot(&ticket.terminal) {
            Some(slot) => (slot, false),
            None => (self.wait_slot(&ticket.terminal).await, true),
        }
    }

    /// A slot for pushing a photo to `terminal`, waiting as long as it
    /// takes (pushes are as many as alerts, which are bounded elsewhere).
    /// The `bool` says whether it waited.
    pub(crate) async fn push(&self, terminal: TerminalId) -> (Slot, bool) {
        let t = self.terminal(terminal);
        match self.try_slot(&t) {
            Some(slot) => (slot, false),
            None => (self.wait_slot(&t).await, true),
        }
    }

    fn try_slot(&self, t: &Terminal) -> Option<Slot> {
        let terminal = t.slots.clone().try_acquire_owned().ok()?;
        let global = self.global.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _terminal: terminal,
            _global: global,
        })
    }

    async fn wait_slot(&self, t: &Terminal) -> Slot {
        // Neither semaphore is ever closed.
        let terminal = t
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("transfer slots are never closed");
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("transfer slots are never closed");
        Slot {
            _terminal: terminal,
            _global: global,
        }
    }

    /// Whether to log a warning about `terminal` now: at most one every
    /// 10 s per terminal, so an attack does not flood the log.
    pub(crate) fn should_warn(&self, terminal: TerminalId) -> bool {
        let t = self.terminal(terminal);
        // Offset by one period, so the first warning goes through at start.
        let now = self.started.elapsed().as_millis() as u64 + warn::EVERY_MS;
        t.warned.due(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fetches_wait_up_to_the_queue_then_are_refused() {
        let config = config::Attachments {
            transfers_per_terminal: 1,
            queued_fetches: 1,
            ..config::Attachments::default()
        };
        let transfers = Arc::new(Transfers::new(&config));
        let (a, b) = (TerminalId(1), TerminalId(2));
        let first = transfers.admit_fetch(a).unwrap();
        let (slot, waited) = transfers.fetch(&first).await;
        assert!(!waited);
        let second = transfers.admit_fetch(a).unwrap();
        let waiting = {
            let transfers = transfers.clone();
            tokio::spawn(async move { transfers.fetch(&second).await.1 })
        };
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(transfers.admit_fetch(a).err(), Some(Busy));
        // Another terminal is not held up.
        let other = transfers.admit_fetch(b).unwrap();
        assert!(!transfers.fetch(&other).await.1);
        drop((slot, first));
        assert!(waiting.await.unwrap());
        // Finished fetches make room again.
        assert!(transfers.admit_fetch(a).is_ok());
        assert!(transfers.should_warn(a));
        assert!(!transfers.should_warn(a));
    }
}
