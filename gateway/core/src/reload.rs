//! What an org reload changes: which terminals and nodes come and go, and
//! which memberships a terminal may no longer keep.
//!
//! The driver swaps the org, then applies [`Diff`] and [`keeps`] to every
//! terminal it remembers: removed terminals are closed, memberships that
//! [`keeps`] refuses are ended, everything else is left alone.

use ptt_codec::{GroupId, TerminalId};
use ptt_org::{Org, Policy};

use crate::session::join_rights;

/// Terminals and nodes of the old org that the new one adds or removes.
/// Each list is sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Terminals only in the new org: they can connect now.
    pub added_terminals: Vec<TerminalId>,
    /// Terminals only in the old org: closed, and refused from now on.
    pub removed_terminals: Vec<TerminalId>,
    /// Nodes only in the new org: each gets a talk group.
    pub added_nodes: Vec<GroupId>,
    /// Nodes only in the old org: their groups are emptied and dropped.
    pub removed_nodes: Vec<GroupId>,
}

impl Diff {
    /// What replacing `old` with `new` adds and removes.
    pub fn between(old: &Org, new: &Org) -> Self {
        let only = |a: &Org, b: &Org| {
            let mut v: Vec<_> = a
                .terminals()
                .map(|t| t.id)
                .filter(|id| b.terminal(*id).is_none())
                .collect();
            v.sort_unstable();
            v
        };
        let only_nodes = |a: &Org, b: &Org| {
            let mut v: Vec<_> = a.groups().filter(|g| b.node(*g).is_none()).collect();
            v.sort_unstable();
            v
        };
        Self {
            added_terminals: only(new, old),
            removed_terminals: only(old, new),
            added_nodes: only_nodes(new, old),
            removed_nodes: only_nodes(old, new),
        }
    }

    /// Whether the reload changes no terminal or node set (rights may
    /// still have changed: a terminal moved or changed role).
    pub fn is_empty(&self) -> bool {
        self.added_terminals.is_empty()
            && self.removed_terminals.is_empty()
            && self.added_nodes.is_empty()
            && self.removed_nodes.is_empty()
    }
}

/// Whether `terminal`, a member of `group` with talk right `talk`, stays a
/// member under the new org `org`: the same rule a `Join` passes
/// ([`join_rights`]), and a member that could talk must still be allowed
/// to (a terminal that lost its talk right leaves, and may join again to
/// listen). A listener granted talk by the new org keeps its membership as
/// it is; it gets the right on its next join.
///
/// Call it for every remembered membership after the org is swapped.
pub fn keeps(org: &Org, policy: &Policy, terminal: TerminalId, group: GroupId, talk: bool) -> bool {
    match join_rights(org, policy, terminal, group) {
        Ok(rights) => rights.talk || !talk,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// City 1 > district 2 > police station 3 > station 4 > units 5, 6;
    /// police station 9 beside 3.
    const NODES: &str = r#"
[[node]]
id = 1
kind = "city"
name = "city"
[[node]]
id = 2
parent = 1
kind = "district"
name = "district"
[[node]]
id = 3
parent = 2
kind = "police_station"
name = "east"
[[node]]
id = 4
parent = 3
kind = "station"
name = "station"
[[node]]
id = 5
parent = 4
kind = "unit"
name = "unit a"
[[node]]
id = 6
parent = 4
kind = "unit"
name = "unit b"
[[node]]
id = 9
parent = 2
kind = "police_station"
name = "west"
"#;

    fn terminal(id: u32, role: &str, node: u32) -> String {
        format!(
            "[[terminal]]\nid = {id}\nname = \"t{id}\"\nrole = \"{role}\"\nkind = \"handheld\"\nnode = {node}\n"
        )
    }

    fn org(extra_nodes: &str, terminals: &[String]) -> Org {
        let text = format!("{NODES}{extra_nodes}{}", terminals.concat());
        Org::from_toml(&text, Path::new(".")).expect("the test org is valid")
    }

    const T: fn(u32) -> TerminalId = TerminalId;
    const G: fn(u32) -> GroupId = GroupId;

    #[test]
    fn the_diff_lists_added_and_removed_terminals_and_nodes_sorted() {
        let old = org(
            "",
            &[
                terminal(501, "security_guard", 5),
                terminal(502, "security_guard", 5),
                terminal(601, "security_guard", 6),
            ],
        );
        let unit7 = "[[node]]\nid = 7\nparent = 4\nkind = \"unit\"\nname = \"unit c\"\n";
        let new_text = format!(
            "{}{unit7}{}{}{}",
            NODES.replace(
                "[[node]]\nid = 9\nparent = 2\nkind = \"police_station\"\nname = \"west\"\n",
                ""
            ),
            terminal(502, "security_guard", 5),
            terminal(701, "security_guard", 7),
            terminal(503, "security_guard", 5),
        );
        let new = Org::from_toml(&new_text, Path::new(".")).expect("valid");
        let diff = Diff::between(&old, &new);
        assert_eq!(
            diff,
            Diff {
                added_terminals: vec![T(503), T(701)],
                removed_terminals: vec![T(501), T(601)],
                added_nodes: vec![G(7)],
                removed_nodes: vec![G(9)],
            }
        );
        assert!(!diff.is_empty());
        assert!(Diff::between(&old, &old).is_empty());
    }

    #[test]
    fn an_untouched_terminal_keeps_every_membership() {
        let old = org("", &[terminal(501, "security_guard", 5)]);
        let new = org(
            "",
            &[
                terminal(501, "security_guard", 5),
                terminal(502, "security_guard", 5),
            ],
        );
        let p = Policy::default();
        for o in [&old, &new] {
            assert!(keeps(o, &p, T(501), G(5), true), "its unit, talking");
            assert!(keeps(o, &p, T(501), G(4), false), "its station, listening");
        }
    }

    #[test]
    fn a_moved_terminal_loses_its_old_unit_and_keeps_the_shared_station() {
        let new = org("", &[terminal(501, "security_guard", 6)]);
        let p = Policy::default();
        assert!(!keeps(&new, &p, T(501), G(5), true), "old unit");
        assert!(keeps(&new, &p, T(501), G(4), false), "same station");
        assert!(keeps(&new, &p, T(501), G(6), true), "new unit");
    }

    #[test]
    fn a_role_change_that_takes_the_talk_right_away_ends_the_membership() {
        // A police officer talks in every group of its police station; as a
        // guard of unit 5 it may only listen to station 4.
        let new = org("", &[terminal(501, "security_guard", 5)]);
        let p = Policy::default();
        assert!(
            !keeps(&new, &p, T(501), G(4), true),
            "talked, may only listen"
        );
        assert!(keeps(&new, &p, T(501), G(4), false), "listened, still may");
        assert!(
            !keeps(&new, &p, T(501), G(3), false),
            "police station: no right"
        );
        assert!(!keeps(&new, &p, T(501), G(6), true), "other unit: no right");
        // The other way round: a guard made police keeps what it had, listener
        // included (it gets the talk right on its next join).
        let promoted = org("", &[terminal(501, "police", 5)]);
        assert!(keeps(&promoted, &p, T(501), G(4), false));
        assert!(keeps(&promoted, &p, T(501), G(5), true));
    }

    #[test]
    fn removed_terminals_and_groups_keep_nothing() {
        let new = org("", &[terminal(501, "security_guard", 5)]);
        let p = Policy::default();
        assert!(
            !keeps(&new, &p, T(502), G(5), true),
            "terminal not in the org"
        );
        assert!(
            !keeps(&new, &p, T(501), G(99), false),
            "group not in the org"
        );
    }
}
