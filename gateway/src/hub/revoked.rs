//! The revoked terminals, in memory: read from the store's revocation
//! list every `auth.revocation_poll_ms` and on SIGHUP, checked at every
//! `Hello` and when a session starts.

use std::collections::BTreeSet;
use std::sync::RwLock;

use ptt_codec::TerminalId;

use super::warn;

/// The set of revoked terminals.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    set: RwLock<BTreeSet<TerminalId>>,
    /// Refused `Hello`s of revoked terminals are warned about at most once
    /// per [`warn::EVERY_MS`]: a revoked handset retrying in a loop cannot
    /// flood the log.
    warned: warn::Gate,
}

impl Revoked {
    /// Whether `terminal`'s credential is revoked. Call after it
    /// authenticated, and again once its session is registered.
    pub(crate) fn contains(&self, terminal: TerminalId) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&terminal)
    }

    /// Replaces the set with `now` (the store's list); returns the
    /// terminals newly revoked (whose live sessions the caller closes) and
    /// how many were lifted.
    pub(crate) fn replace(&self, now: Vec<TerminalId>) -> (Vec<TerminalId>, usize) {
        let now: BTreeSet<TerminalId> = now.into_iter().collect();
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        if *set == now {
            return (Vec::new(), 0);
        }
        let added = now.difference(&set).copied().collect();
        let lifted = set.difference(&now).count();
        *set = now;
        (added, lifted)
    }

    /// How many terminals are revoked.
    pub(crate) fn len(&self) -> usize {
        self.set.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether a refused `Hello` may be warned about at `now_ms`.
    pub(crate) fn warn_due(&self, now_ms: u64) -> bool {
        self.warned.due(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_says_who_is_newly_revoked() {
        let r = Revoked::default();
        assert!(!r.contains(TerminalId(5)));
        assert_eq!(
            r.replace(vec![TerminalId(5), TerminalId(7)]),
            (vec![TerminalId(5), TerminalId(7)], 0)
        );
        assert!(r.contains(TerminalId(5)) && r.contains(TerminalId(7)));
        // The same list again: nothing new.
        assert_eq!(r.replace(vec![TerminalId(7), TerminalId(5)]), (vec![], 0));
        // 5 lifted, 9 added.
        assert_eq!(
            r.replace(vec![TerminalId(7), TerminalId(9)]),
            (vec![TerminalId(9)], 1)
        );
        assert!(!r.contains(TerminalId(5)));
        assert_eq!(r.len(), 2);
    }
}
