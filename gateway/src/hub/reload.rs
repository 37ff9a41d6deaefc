//! Org reload: read the org file again, validate it whole, swap it in, and
//! carry the change out on the terminals it touches.
//!
//! Order matters for the lock-free readers. The group map is first widened
//! to old plus new groups, then the org is swapped, then memberships the
//! new org refuses are ended (removed nodes' groups emptied with them),
//! and only then is the map narrowed to the new org's nodes. So a reader
//! that sees the new org always finds its groups, and a group that
//! survives keeps its `Arc` (its members, floor and burst) throughout.

use std::collections::HashMap;
use std::sync::Arc;

use ptt_codec::{CloseCode, ServerMsg, TerminalId};
use ptt_gateway_core::reload::{keeps, Diff};

use super::{new_group, Hub};
use crate::metrics::Metrics;
use crate::org::{auth::ProvisioningKey, Org};
use crate::outbox::close;
use crate::reload::{Error as ReloadError, Outcome};

impl Hub {
    /// Reads the configured org file, and swaps it in if it loads whole with
    /// the same provisioning key; then closes removed terminals
    /// (`ORG_REMOVED`), ends the memberships the new org no longer allows
    /// (`Left`), creates new nodes' groups and drops removed ones. Any error
    /// leaves the running org as it was. Call it on SIGHUP; reloads run one
    /// at a time.
    pub(crate) fn reload_org(&self) -> Result<Outcome, ReloadError> {
        let mut generation = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let result = self
            .load_org()
            .map(|new| self.swap_org(new, *generation + 1));
        match &result {
            Ok(outcome) => {
                *generation = outcome.generation;
                Metrics::add(&self.metrics.org_reloads, 1);
                Metrics::add(
                    &self.metrics.sessions_removed_by_reload,
                    outcome.sessions_closed as u64,
                );
                let d = &outcome.diff;
                tracing::info!(
                    generation = outcome.generation,
                    terminals_added = d.added_terminals.len(),
                    terminals_removed = d.removed_terminals.len(),
                    nodes_added = d.added_nodes.len(),
                    nodes_removed = d.removed_nodes.len(),
                    sessions_closed = outcome.sessions_closed,
                    memberships_ended = outcome.memberships_ended,
                    "org reloaded"
                );
            }
            Err(e) => {
                Metrics::add(&self.metrics.org_reload_failures, 1);
                tracing::error!(
                    generation = *generation,
                    "org reload refused, the running org keeps serving: {e}"
                );
            }
        }
        result
    }

    /// The org generation serving now.
    pub(crate) fn org_generation(&self) -> u64 {
        *self.reloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured org file, loaded and checked against the running key.
    fn load_org(&self) -> Result<Org, ReloadError> {
        let path = self.config.org.as_ref().ok_or(ReloadError::NoOrgFile)?;
        let org = Org::load(path)?;
        let key_path = match (&self.config.provisioning_key, org.key_file()) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => k.to_path_buf(),
            (None, None) => return Err(ReloadError::NoKey),
        };
        if !same_key(&ProvisioningKey::load(&key_path)?, &self.key) {
            return Err(ReloadError::KeyChanged);
        }
        Ok(org)
    }

    /// Swaps `new` in as generation `generation` and carries out the
    /// change (see the module docs for the order).
    fn swap_org(&self, new: Org, generation: u64) -> Outcome {
        let old = self.org.load_full();
        let diff = Diff::between(&old, &new);
        let current = self.groups.load_full();
        let mut widened: HashMap<_, _> = (*current).clone();
        for id in &diff.added_nodes {
            let group = new_group(
                &self.config,
                &new,
                *id,
                &self.metrics,
                &self.audit_tx,
                self.recorder.as_ref(),
            );
            if let Some(cluster) = self.cluster() {
                group.join_cluster(Arc::clone(cluster));
            }
            widened.insert(*id, group);
        }
        self.groups.store(Arc::new(widened));
        let new = Arc::new(new);
        self.org.store(new.clone());

        let mut outcome = Outcome {
            generation,
            ..Outcome::default()
        };
        let policy = &self.config.policy;
        for (terminal, live, groups) in self.registry.remembered() {
            if new.terminal(terminal).is_none() {
                // Removed from the org: forget it everywhere, then close it.
                // Its Hello is refused from now on (not in the org).
                for group in self.registry.forget_all(terminal) {
                    if let (Some(live), Some(g)) = (&live, self.group(group)) {
                        g.detach(terminal, live.id);
                    }
                }
                if let Some(live) = live {
                    close(&live.conn, CloseCode::OrgRemoved, "removed from the org");
                    outcome.sessions_closed += 1;
                    tracing::warn!(%terminal, "terminal removed from the org: session closed");
                }
                continue;
            }
            for (group, talk) in groups {
                if keeps(&new, policy, terminal, group, talk) {
                    continue;
                }
                if !self.registry.forget(terminal, group) {
                    continue;
                }
                outcome.memberships_ended += 1;
                if let Some(live) = &live {
                    if let Some(g) = self.group(group) {
                        g.detach(terminal, live.id);
                    }
                    live.outbox.send(ServerMsg::Left { group });
                    tracing::info!(%terminal, %group, "membership ended by an org reload");
                }
            }
        }

        let narrowed: HashMap<_, _> = self
            .groups
            .load()
            .iter()
            .filter(|(id, _)| new.node(**id).is_some())
            .map(|(id, g)| (*id, g.clone()))
            .collect();
        self.groups.store(Arc::new(narrowed));
        outcome.diff = diff;
        outcome
    }
}

/// Whether two provisioning keys are the same key. Compares credentials
/// derived for one id, so the key bytes never leave their type.
fn same_key(a: &ProvisioningKey, b: &ProvisioningKey) -> bool {
    let probe = TerminalId(u32::MAX);
    a.verify(probe, &b.credential(probe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_is_the_same_key() {
        let key = ProvisioningKey::generate();
        let copy = ProvisioningKey::from_hex(&key.to_hex()).expect("its own hex");
        assert!(same_key(&key, &copy));
        assert!(!same_key(&key, &ProvisioningKey::generate()));
    }
}
