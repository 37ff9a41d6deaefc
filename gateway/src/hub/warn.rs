//! How often a warning about one thing may be logged: the counters count
//! every case, the log says it at most once per [`EVERY_MS`], so an attack
//! cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most one warning per gate in this long, ms.
pub(crate) const EVERY_MS: u64 = 10_000;

/// When a warning was last let through.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// When the last warning was let through (ms on the caller's clock).
    last_ms: AtomicU64,
}

impl Gate {
    /// Whether a warning may be logged at `now_ms` (one per [`EVERY_MS`];
    /// the first one at or after `EVERY_MS` on the caller's clock). Of
    /// callers racing, one wins.
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= EVERY_MS
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
