//! Authorisation: who may join, listen and talk in which group, and with
//! which floor priority.

use ptt_codec::{GroupId, TerminalId};
use serde::Deserialize;

use super::{NodeKind, Org, Role, TerminalKind};

/// The authorisation policy, `[policy]` in the gateway config.
///
/// Defaults follow how co-governance units work (FIELD.md): each unit talks
/// among itself and hears its station; police lead the units of their police
/// station; command rooms monitor and talk into everything below them.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Members (guards, staff, volunteers) may listen to their
    /// co-governance station's group. Default true.
    pub member_listens_station: bool,
    /// Police and auxiliary police may join and talk in any group under
    /// their ancestor of this kind. Default `police_station`; `district`
    /// widens it.
    pub police_scope: NodeKind,
    /// Consoles may talk (not only monitor) in the groups under their node.
    /// Default true.
    pub console_talk: bool,
    /// Floor priority per role.
    pub priority: RolePriorities,
    /// Roles that may request the floor at emergency class (consoles count
    /// as dispatchers). Every terminal may raise an SOS, whose hot mic
    /// always has it; this only gates the talk key's emergency class.
    /// Default every role but `volunteer` (FIELD.md): guards radio the
    /// emergency and staff respond to it, police and the command room
    /// outrank everyone; volunteers use a phone app (thousands per city),
    /// the least controlled handsets, and call for help with SOS.
    pub emergency_roles: Vec<Role>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            member_listens_station: true,
            police_scope: NodeKind::PoliceStation,
            console_talk: true,
            priority: RolePriorities::default(),
            emergency_roles: vec![
                Role::Dispatcher,
                Role::Police,
                Role::AuxiliaryPolice,
                Role::SecurityGuard,
                Role::Staff,
            ],
        }
    }
}

/// Floor priority (0-255, higher wins) per role. The command room outranks
/// a guard on the air (FIELD.md); an emergency class outranks any priority.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolePriorities {
    /// Consoles and dispatchers. Default 200.
    pub dispatcher: u8,
    /// Police officers. Default 150.
    pub police: u8,
    /// Auxiliary police. Default 120.
    pub auxiliary_police: u8,
    /// Security guards. Default 80.
    pub security_guard: u8,
    /// Staff. Default 60.
    pub staff: u8,
    /// Volunteers. Default 60.
    pub volunteer: u8,
}

impl Default for RolePriorities {
    fn default() -> Self {
        Self {
            dispatcher: 200,
            police: 150,
            auxiliary_police: 120,
            security_guard: 80,
            staff: 60,
            volunteer: 60,
        }
    }
}

impl Policy {
    /// Floor priority of a terminal; a console device counts as a dispatcher
    /// whatever its user's role.
    pub fn priority(&self, role: Role, kind: TerminalKind) -> u8 {
        let p = &self.priority;
        if kind == TerminalKind::Console {
            return p.dispatcher;
        }
        match role {
            Role::Dispatcher => p.dispatcher,
            Role::Police => p.police,
            Role::AuxiliaryPolice => p.auxiliary_police,
            Role::SecurityGuard => p.security_guard,
            Role::Staff => p.staff,
            Role::Volunteer => p.volunteer,
        }
    }
}

impl Policy {
    /// Whether a terminal may request the floor at emergency class
    /// ([`Policy::emergency_roles`]); a console device counts as a
    /// dispatcher whatever its user's role.
    pub fn may_claim_emergency(&self, role: Role, kind: TerminalKind) -> bool {
        let role = if kind == TerminalKind::Console {
            Role::Dispatcher
        } else {
            role
        };
        self.emergency_roles.contains(&role)
    }
}

/// What a terminal may do in a group it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// Hear the group.
    pub listen: bool,
    /// Request the floor.
    pub talk: bool,
}

/// Why a terminal has no rights in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The terminal is not in the org.
    #[error("unknown terminal")]
    UnknownTerminal,
    /// The group is not in the org.
    #[error("unknown group")]
    UnknownGroup,
    /// The policy does not allow it.
    #[error("not allowed")]
    NotAllowed,
}

impl Org {
    /// The rights of `terminal` in `group` under `policy`.
    pub fn rights(
        &self,
        policy: &Policy,
        terminal: TerminalId,
        group: GroupId,
    ) -> Result<Rights, Denied> {
        let t = self.terminal(terminal).ok_or(Denied::UnknownTerminal)?;
        self.node(group).ok_or(Denied::UnknownGroup)?;
        let both = Rights {
            listen: true,
            talk: true,
        };
        if t.is_console() {
            return if self.is_ancestor_or_self(t.node, group.0) {
                Ok(Rights {
                    listen: true,
                    talk: policy.console_talk,
                })
            } else {
                Err(Denied::NotAllowed)
            };
        }
        match t.role {
            Role::Police | Role::AuxiliaryPolice => {
                let scope = self
                    .ancestor_of_kind(t.node, policy.police_scope)
                    .unwrap_or(t.node);
                if self.is_ancestor_or_self(scope, group.0) {
                    Ok(both)
                } else {
                    Err(Denied::NotAllowed)
                }
            }
            _ if group.0 == t.node => Ok(both),
            _ if policy.member_listens_station
                && self.ancestor_of_kind(t.node, NodeKind::Station) == Some(group.0) =>
            {
                Ok(Rights {
                    listen: true,
                    talk: false,
                })
            }
            _ => Err(Denied::NotAllowed),
        }
    }
}

/// Who commands whom: the rule behind watching positions, cancelling an
/// SOS and reading a drill report.
impl Org {
    /// Whether `console` commands `node`: it is a console, and `node` is its
    /// own node or below it.
    pub fn commands_node(&self, console: TerminalId, node: u32) -> bool {
        self.terminal(console)
            .is_some_and(|c| c.is_console() && self.is_ancestor_or_self(c.node, node))
    }

    /// Whether `by` may act for `terminal` (cancel its SOS, read the drill
    /// reports it issued): the terminal itself, or a console commanding its
    /// node.
    pub fn commands(&self, by: TerminalId, terminal: TerminalId) -> bool {
        by == terminal
            || self
                .terminal(terminal)
                .is_some_and(|t| self.commands_node(by, t.node))
    }
}

#[cfg(test)]
mod command_tests {
    use std::path::Path;

    use super::*;

    const TREE: &str = r#"
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
name = "unit"

[[node]]
id = 9
parent = 2
kind = "police_station"
name = "west"

[[terminal]]
id = 100
name = "city console"
role = "dispatcher"
kind = "console"
node = 1

[[terminal]]
id = 300
name = "east console"
role = "dispatcher"
kind = "console"
node = 3

[[terminal]]
id = 900
name = "west console"
role = "dispatcher"
kind = "console"
node = 9

[[terminal]]
id = 301
name = "officer"
role = "police"
kind = "handheld"
node = 3

[[terminal]]
id = 501
name = "guard"
role = "security_guard"
kind = "handheld"
node = 5
"#;

    fn org() -> Org {
        Org::from_toml(TREE, Path::new(".")).expect("the test tree is valid")
    }

    #[test]
    fn a_console_commands_its_node_and_below_only() {
        let org = org();
        let t = TerminalId;
        assert!(org.commands_node(t(300), 3));
        assert!(org.commands_node(t(300), 5));
        assert!(org.commands_node(t(100), 9));
        assert!(!org.commands_node(t(300), 9));
        assert!(!org.commands_node(t(300), 1));
        // Not a console, even on its own node; unknown terminals nothing.
        assert!(!org.commands_node(t(301), 3));
        assert!(!org.commands_node(t(4242), 3));
    }

    #[test]
    fn a_terminal_is_commanded_by_itself_and_consoles_above_it() {
        let org = org();
        let t = TerminalId;
        assert!(org.commands(t(501), t(501)));
        assert!(org.commands(t(300), t(501)));
        assert!(org.commands(t(100), t(501)));
        assert!(!org.commands(t(900), t(501)));
        assert!(!org.commands(t(301), t(501)));
        // A console over an unknown terminal commands nothing; the terminal
        // itself is still itself.
        assert!(!org.commands(t(100), t(4242)));
        assert!(org.commands(t(4242), t(4242)));
    }
}

#[cfg(test)]
mod emergency_tests {
    use super::*;

    #[test]
    fn every_role_but_volunteers_may_claim_emergency_by_default() {
        let p = Policy::default();
        for role in [
            Role::Dispatcher,
            Role::Police,
            Role::AuxiliaryPolice,
            Role::SecurityGuard,
            Role::Staff,
        ] {
            assert!(
                p.may_claim_emergency(role, TerminalKind::Handheld),
                "{role:?}"
            );
        }
        assert!(!p.may_claim_emergency(Role::Volunteer, TerminalKind::PhoneApp));
        // A console counts as a dispatcher.
        assert!(p.may_claim_emergency(Role::Volunteer, TerminalKind::Console));
    }

    #[test]
    fn the_config_lists_the_roles() {
        let p: Policy = toml::from_str("emergency_roles = [\"police\"]").expect("valid");
        assert!(p.may_claim_emergency(Role::Police, TerminalKind::Handheld));
        assert!(!p.may_claim_emergency(Role::SecurityGuard, TerminalKind::Handheld));
        let none: Policy = toml::from_str("emergency_roles = []").expect("valid");
        assert!(!none.may_claim_emergency(Role::Dispatcher, TerminalKind::Console));
    }
}
