//! Which terminals are online, in which session, and which groups each is
//! in (kept across reconnects).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::link::Link;
use dashmap::DashMap;
use ptt_codec::{GroupId, TerminalId};
use ptt_gateway_core::session::JoinRefusal;

use crate::outbox::Outbox;

/// A terminal's live session, as other sessions reach it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    /// Session id: a newer session of the same terminal has a larger one.
    pub(crate) id: u64,
    /// For alert and attachment streams.
    pub(crate) conn: Link,
    /// For control messages.
    pub(crate) outbox: Outbox,
}

/// What the gateway remembers of a terminal across connections.
#[derive(Debug, Default)]
struct Remembered {
    /// The live session, if any.
    session: Option<Live>,
    /// Groups the terminal is in, with its talk right there. Kept while it
    /// is offline so a reconnect restores them.
    groups: BTreeMap<GroupId, bool>,
}

/// A remembered terminal: its id, its live session if any, and its groups
/// with their talk right.
pub(crate) type Membership = (TerminalId, Option<Live>, Vec<(GroupId, bool)>);

/// Every terminal seen since start, with its live session and groups.
#[derive(Debug)]
pub(crate) struct Registry {
    terminals: DashMap<TerminalId, Remembered>,
    next_session: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            terminals: DashMap::new(),
            next_session: AtomicU64::new(1),
        }
    }
}

impl Registry {
    /// A fresh session id, larger than every one handed out before.
    pub(crate) fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes `live` the terminal's session. Returns the groups remembered
    /// for it and the connection of the session it replaced, if any (the
    /// caller closes it).
    pub(crate) fn register(
        &self,
        terminal: TerminalId,
        live: Live,
    ) -> (BTreeMap<GroupId, bool>, Option<Link>) {
        let mut entry = self.terminals.entry(terminal).or_default();
        let old = entry.session.replace(live).map(|l| l.conn);
        (entry.groups.clone(), old)
    }

    /// Ends session `session` of `terminal`, unless a newer one took over.
    /// Returns the groups it was online in, or `None` when it was replaced.
    /// Groups stay remembered for a reconnect.
    pub(crate) fn unregister(&self, terminal: TerminalId, session: u64) -> Option<Vec<GroupId>> {
        let mut entry = self.terminals.get_mut(&terminal)?;
        match &entry.session {
            Some(live) if live.id == session => entry.session = None,
            _ => return None,
        }
        Some(entry.groups.keys().copied().collect())
    }

    /// Whether `terminal` is in `group`.
    pub(crate) fn joined(&self, terminal: TerminalId, group: GroupId) -> bool {
        self.terminals
            .get(&terminal)
            .is_some_and(|e| e.groups.contains_key(&group))
    }

    /// Remembers `terminal` in `group` with talk right `talk`, unless
    /// `limit` refuses it (called with the number of groups it is in and
    /// whether `group` is one of them), under the terminal's entry lock.
    pub(crate) fn remember(
        &self,
        terminal: TerminalId,
        group: GroupId,
        talk: bool,
        limit: impl FnOnce(usize, bool) -> Result<(), JoinRefusal>,
    ) -> Result<(), JoinRefusal> {
        let mut entry = self
            .terminals
            .get_mut(&terminal)
            .ok_or(JoinRefusal::Unregistered)?;
        limit(entry.groups.len(), entry.groups.contains_key(&group))?;
        entry.groups.insert(group, talk);
        Ok(())
    }

    /// Forgets `terminal` in `group`; returns whether it was in it.
    pub(crate) fn forget(&self, terminal: TerminalId, group: GroupId) -> bool {
        self.terminals
            .get_mut(&terminal)
            .and_then(|mut e| e.groups.remove(&group))
            .is_some()
    }

    /// Forgets every group of `terminal` (logout); returns them.
    pub(crate) fn forget_all(&self, terminal: TerminalId) -> Vec<GroupId> {
        self.terminals
            .get_mut(&terminal)
            .map(|mut e| std::mem::take(&mut e.groups))
            .unwrap_or_default()
            .into_keys()
            .collect()
    }

    /// Whether `terminal` has a live session.
    pub(crate) fn is_online(&self, terminal: TerminalId) -> bool {
        self.terminals
            .get(&terminal)
            .is_some_and(|e| e.session.is_some())
    }

    /// The control-message queue of `terminal`'s live session, if any.
    pub(crate) fn outbox(&self, terminal: TerminalId) -> Option<Outbox> {
        self.terminals
            .get(&terminal)
            .and_then(|e| e.session.as_ref().map(|l| l.outbox.clone()))
    }

    /// The connection of `terminal`'s live session, if any.
    pub(crate) fn conn(&self, terminal: TerminalId) -> Option<Link> {
        self.terminals
            .get(&terminal)
            .and_then(|e| e.session.as_ref().map(|l| l.conn.clone()))
    }

    /// Every terminal online now, with its connection and the groups it is
    /// in, for operators' views. Walks every entry: never on the voice path.
    pub(crate) fn online(&self) -> Vec<(TerminalId, Link, Vec<GroupId>)> {
        self.terminals
            .iter()
            .filter_map(|e| {
                let live = e.session.as_ref()?;
                Some((
                    *e.key(),
                    live.conn.clone(),
                    e.groups.keys().copied().collect(),
                ))
            })
            .collect()
    }

    /// Every terminal remembered, online or not, with its live session and
    /// its groups with their talk right: what an org reload re-checks.
    /// Walks every entry: never on the voice path.
    pub(crate) fn remembered(&self) -> Vec<Membership> {
        self.terminals
            .iter()
            .map(|e| {
                let groups = e.groups.iter().map(|(g, t)| (*g, *t)).collect();
                (*e.key(), e.session.clone(), groups)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::testing;

    fn live(registry: &Registry, conn: &Link) -> Live {
        let (outbox, _rx) = Outbox::new(conn.clone(), 4);
        Live {
            id: registry.next_session(),
            conn: conn.clone(),
            outbox,
        }
    }

    #[tokio::test]
    async fn a_newer_session_replaces_the_older_and_keeps_its_groups() {
        let (_server, _client, conn) = testing::connection().await;
        let registry = Registry::default();
        let t = TerminalId(7);
        let first = live(&registry, &conn);
        let (groups, replaced) = registry.register(t, first.clone());
        assert!(groups.is_empty() && replaced.is_none());
        assert!(registry.is_online(t));
        let any = |_: usize, _: bool| Ok(());
        registry.remember(t, GroupId(5), true, any).unwrap();
        registry.remember(t, GroupId(6), false, any).unwrap();

        let second = live(&registry, &conn);
        assert!(second.id > first.id, "session ids grow");
        let (groups, replaced) = registry.register(t, second.clone());
        assert!(
            replaced.is_some(),
            "the older connection is handed back to close"
        );
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            [(GroupId(5), true), (GroupId(6), false)]
        );
        // The replaced session's late cleanup leaves the new one alone.
        assert_eq!(registry.unregister(t, first.id), None);
        assert!(registry.is_online(t));
        assert_eq!(
            registry.unregister(t, second.id),
            Some(vec![GroupId(5), GroupId(6)])
        );
        assert!(!registry.is_online(t));
        assert!(registry.outbox(t).is_none() && registry.conn(t).is_none());
        // Groups are remembered while offline, until a logout forgets them.
        assert!(registry.joined(t, GroupId(5)));
        assert_eq!(registry.forget_all(t), [GroupId(5), GroupId(6)]);
        assert!(!registry.joined(t, GroupId(5)));
    }

    #[tokio::test]
    async fn remembering_applies_the_limit_under_the_entry() {
        let (_server, _client, conn) = testing::connection().await;
        let registry = Registry::default();
        let t = TerminalId(7);
        let limit = |count: usize, already: bool| {
            ptt_gateway_core::session::within_limit(count, already, 1)
        };
        assert_eq!(
            registry.remember(t, GroupId(5), true, limit),
            Err(JoinRefusal::Unregistered)
        );
        registry.register(t, live(&registry, &conn));
        assert_eq!(registry.remember(t, GroupId(5), true, limit), Ok(()));
        assert_eq!(registry.remember(t, GroupId(5), false, limit), Ok(()));
        assert_eq!(
            registry.remember(t, GroupId(6), true, limit),
            Err(JoinRefusal::TooManyGroups)
        );
        assert!(registry.forget(t, GroupId(5)));
        assert!(!registry.forget(t, GroupId(5)));
        assert_eq!(registry.remember(t, GroupId(6), true, limit), Ok(()));
    }
}
