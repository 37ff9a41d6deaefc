//! Which terminals a run needs, and which groups each joins, derived from
//! the org file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use ptt_codec::{GroupId, TerminalId};
use ptt_org::auth::ProvisioningKey;
use ptt_org::{NodeKind, Org, TerminalKind};

/// One exercised unit group.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// The unit's group.
    pub id: GroupId,
    /// Unit members (they may talk).
    pub talkers: Vec<TerminalId>,
    /// Everyone who hears the group: the members and the station console.
    pub listeners: Vec<TerminalId>,
    /// The police station's console, monitoring the group.
    pub console: Option<TerminalId>,
}

/// The terminals and groups of a run.
#[derive(Debug)]
pub struct Plan {
    /// Exercised groups.
    pub groups: Vec<GroupPlan>,
    /// Every terminal to connect, with the groups it joins.
    pub terminals: BTreeMap<TerminalId, Vec<GroupId>>,
    /// The org it was drawn from.
    pub org: Org,
    key: ProvisioningKey,
}

impl Plan {
    /// The first `groups` co-governance units of the org file (by id), each
    /// with its members and its police station's console.
    pub fn new(org_path: &Path, groups: usize) -> anyhow::Result<Plan> {
        let org = Org::load(org_path)
            .with_context(|| format!("loading org file {}", org_path.display()))?;
        let key_path = org
            .key_file()
            .context("the org file names no key_file: the simulator needs the provisioning key")?;
        let key = ProvisioningKey::load(key_path)
            .with_context(|| format!("loading provisioning key {}", key_path.display()))?;
        Ok(Self::from_org(org, key, groups))
    }

    /// As [`Plan::new`], from a loaded org.
    pub fn from_org(org: Org, key: ProvisioningKey, groups: usize) -> Plan {
        let mut members: BTreeMap<GroupId, Vec<TerminalId>> = BTreeMap::new();
        let mut consoles: BTreeMap<GroupId, TerminalId> = BTreeMap::new();
        for t in org.terminals() {
            let node = GroupId(t.node);
            members.entry(node).or_default().push(t.id);
            if t.kind == TerminalKind::Console {
                consoles.entry(node).or_insert(t.id);
            }
        }
        let mut units: Vec<GroupId> = org
            .groups()
            .filter(|g| org.node(*g).is_some_and(|n| n.kind == NodeKind::Unit))
            .collect();
        units.sort_unstable();
        let mut plan = Plan {
            groups: Vec::new(),
            terminals: BTreeMap::new(),
            org: org.clone(),
            key,
        };
        for unit in units.into_iter().take(groups) {
            let talkers = members.get(&unit).cloned().unwrap_or_default();
            let console = org
                .ancestor_of_kind(unit.0, NodeKind::PoliceStation)
                .and_then(|ps| consoles.get(&GroupId(ps)).copied());
            let mut listeners = talkers.clone();
            listeners.extend(console);
            for t in &listeners {
                plan.terminals.entry(*t).or_default().push(unit);
            }
            plan.groups.push(GroupPlan {
                id: unit,
                talkers,
                listeners,
                console,
            });
        }
        plan
    }

    /// Alert senders and the node each alerts: the police station consoles
    /// of the exercised units, or the city console for the whole city (which
    /// is then added to the terminals to connect).
    pub fn alert_senders(&mut self, city: bool) -> Vec<(TerminalId, u32)> {
        let org = &self.org;
        let senders: Vec<(TerminalId, u32)> = if city {
            let root = org.root().id;
            org.terminals()
                .filter(|t| t.node == root && t.is_console())
                .map(|t| (t.id, root))
                .take(1)
                .collect()
        } else {
            let mut s: Vec<(TerminalId, u32)> = self
                .groups
                .iter()
                .filter_map(|g| g.console)
                .filter_map(|c| org.terminal(c).map(|t| (c, t.node)))
                .collect();
            s.sort_unstable();
            s.dedup();
            s
        };
        for (t, _) in &senders {
            self.terminals.entry(*t).or_default();
        }
        senders
    }

    /// Leaves the consoles out: no group lists one, none is connected.
    /// Call right after [`Plan::new`], for runs whose consoles are people's.
    pub fn drop_consoles(&mut self) {
        for g in &mut self.groups {
            if let Some(console) = g.console.take() {
                g.listeners.retain(|t| *t != console);
                self.terminals.remove(&console);
            }
        }
    }

    /// Terminals of this plan at or under `node`, `except` one.
    pub fn under(&self, node: u32, except: TerminalId, online: impl Fn(TerminalId) -> bool) -> u64 {
        self.terminals
            .keys()
            .filter(|t| **t != except && online(**t))
            .filter_map(|t| self.org.terminal(*t))
            .filter(|t| self.org.is_ancestor_or_self(node, t.node))
            .count() as u64
    }

    /// The credential of terminal `id`.
    pub fn credential(&self, id: TerminalId) -> [u8; 32] {
        self.key.credential(id)
    }

    /// One listener per group to record: its last member (the first one
    /// talks first).
    pub fn recorders(&self) -> Vec<(GroupId, TerminalId)> {
        self.groups
            .iter()
            .filter_map(|g| g.talkers.last().map(|t| (g.id, *t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::{generate, CityParams};

    #[test]
    fn dropping_consoles_leaves_only_members() {
        let city = generate(&CityParams {
            units: 40,
            seed: 2,
            name: "金华市".into(),
        });
        let org = Org::from_toml(&city.to_toml("k").unwrap(), Path::new("/tmp")).unwrap();
        let mut plan = Plan::from_org(org, ProvisioningKey::generate(), 40);
        assert!(plan.groups.iter().all(|g| g.console.is_some()));
        let members: usize = plan.groups.iter().map(|g| g.talkers.len()).sum();
        plan.drop_consoles();
        assert_eq!(plan.groups.len(), 40);
        assert!(plan.groups.iter().all(|g| g.console.is_none()));
        assert!(plan.groups.iter().all(|g| g.listeners == g.talkers));
        assert_eq!(plan.terminals.len(), members);
        assert!(plan
            .terminals
            .keys()
            .all(|t| !plan.org.terminal(*t).unwrap().is_console()));
    }
}
