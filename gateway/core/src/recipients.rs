//! Who an alert reaches and whether its sender may send it: pure checks on
//! the org, made before anything is stored.
//!
//! Call [`resolve`] when an `AlertSend` arrives; a [`Refusal`] goes back to
//! the sender as `AlertRefused` with [`Refusal::to_code`] and its text.

use ptt_codec::{AlertBody, AlertKind, ErrorCode, GroupId, Target, TerminalId};
use ptt_org::{Org, Role};

use crate::alert::MAX_TTL_S;
use crate::location::Positions;

/// Positions older than this do not count for nearest-member targeting:
/// ten minutes, twenty missed 30-second reports.
pub const MAX_FIX_AGE_MS: u64 = 10 * 60 * 1000;

/// Why an alert was refused. The text is what the sender reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The sender is not in the org.
    #[error("unknown sender")]
    UnknownSender,
    /// A report or clue was addressed to something other than the station.
    #[error("reports and clues go to your station (target: station)")]
    UpwardNotToStation,
    /// An alert (downward) was addressed to the station.
    #[error("the station target carries reports and clues only")]
    DownwardToStation,
    /// A member (not a console) tried to send an alert.
    #[error("only consoles send alerts; members send reports and clues")]
    NotConsole,
    /// An SOS sent as an ordinary alert.
    #[error("an SOS is raised with the Sos frame")]
    Sos,
    /// The title is empty or blank.
    #[error("empty title")]
    EmptyTitle,
    /// The time-to-live is 0 or above [`MAX_TTL_S`].
    #[error("time-to-live must be 1..={max} s", max = MAX_TTL_S)]
    Ttl,
    /// A targeted terminal is not in the org.
    #[error("unknown terminal {0}")]
    UnknownTerminal(TerminalId),
    /// A targeted terminal is not under the sender's node.
    #[error("terminal {0} is outside your command")]
    TerminalOutside(TerminalId),
    /// The targeted group does not exist.
    #[error("no group {0}")]
    UnknownGroup(GroupId),
    /// The targeted group is not under the sender's node.
    #[error("group {0} is outside your command")]
    GroupOutside(GroupId),
    /// The targeted subtree's root does not exist.
    #[error("no node {0}")]
    UnknownNode(u32),
    /// The targeted subtree is not under the sender's node.
    #[error("node {0} is outside your command")]
    NodeOutside(u32),
    /// A nearest-members alert without the incident's location.
    #[error("a nearest-members alert needs the incident location")]
    NoLocation,
    /// Nobody is left once the sender is taken out.
    #[error("the target has no recipients")]
    NoRecipients,
}

impl Refusal {
    /// The stable wire code `AlertRefused` carries.
    pub fn to_code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownSender
            | Refusal::UpwardNotToStation
            | Refusal::NotConsole
            | Refusal::UnknownTerminal(_)
            | Refusal::TerminalOutside(_)
            | Refusal::GroupOutside(_)
            | Refusal::NodeOutside(_) => ErrorCode::TargetNotAllowed,
            Refusal::UnknownGroup(_) | Refusal::UnknownNode(_) => ErrorCode::UnknownGroup,
            Refusal::DownwardToStation
            | Refusal::Sos
            | Refusal::EmptyTitle
            | Refusal::Ttl
            | Refusal::NoLocation
            | Refusal::NoRecipients => ErrorCode::AlertInvalid,
        }
    }
}

/// Bit of a role in a subtree target's role filter.
fn role_bit(role: Role) -> u8 {
    match role {
        Role::Police => 1,
        Role::AuxiliaryPolice => 2,
        Role::SecurityGuard => 4,
        Role::Staff => 8,
        Role::Volunteer => 16,
        Role::Dispatcher => 32,
    }
}

/// Checks an alert and resolves its recipients (the sender excluded, each
/// once, sorted). Only consoles send alerts, and only to terminals and nodes
/// at or under their own node. A nearest-members target picks members (not
/// consoles) under the sender, online (`online`), with a position no older
/// than [`MAX_FIX_AGE_MS`] at `now_ms` (Unix ms).
pub fn resolve(
    org: &Org,
    positions: &Positions,
    online: impl Fn(TerminalId) -> bool,
    issuer: TerminalId,
    body: &AlertBody,
    target: &Target,
    now_ms: u64,
) -> Result<Vec<TerminalId>, Refusal> {
    let sender = org.terminal(issuer).ok_or(Refusal::UnknownSender)?;
    match (body.kind.is_upward(), target) {
        (true, Target::Station) => {}
        (true, _) => return Err(Refusal::UpwardNotToStation),
        (false, Target::Station) => return Err(Refusal::DownwardToStation),
        (false, _) if !sender.is_console() => return Err(Refusal::NotConsole),
        (false, _) => {}
    }
    if body.kind == AlertKind::Sos {
        return Err(Refusal::Sos);
    }
    if body.title.trim().is_empty() {
        return Err(Refusal::EmptyTitle);
    }
    if body.ttl_s == 0 || body.ttl_s > MAX_TTL_S {
        return Err(Refusal::Ttl);
    }
    let scope = sender.node;
    let within = |node: u32| org.is_ancestor_or_self(scope, node);
    let mut out: Vec<TerminalId> = match target {
        Target::Terminals(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let t = org.terminal(*id).ok_or(Refusal::UnknownTerminal(*id))?;
                if !within(t.node) {
                    return Err(Refusal::TerminalOutside(*id));
                }
                out.push(*id);
            }
            out
        }
        Target::Group(g) => {
            org.node(*g).ok_or(Refusal::UnknownGroup(*g))?;
            if !within(g.0) {
                return Err(Refusal::GroupOutside(*g));
            }
            org.terminals()
                .filter(|t| t.node == g.0)
                .map(|t| t.id)
                .collect()
        }
        Target::Subtree { node, roles } => {
            org.node(GroupId(*node))
                .ok_or(Refusal::UnknownNode(*node))?;
            if !within(*node) {
                return Err(Refusal::NodeOutside(*node));
            }
            org.terminals()
                .filter(|t| org.is_ancestor_or_self(*node, t.node))
                .filter(|t| *roles == 0 || roles & role_bit(t.role) != 0)
                .map(|t| t.id)
                .collect()
        }
        Target::Nearest { k, radius_m } => {
            let Some(at) = &body.location else {
                return Err(Refusal::NoLocation);
            };
            let keep = |id: TerminalId| {
                id != issuer
                    && online(id)
                    && org
                        .terminal(id)
                        .is_some_and(|t| !t.is_console() && within(t.node))
            };
            positions
                .nearest(
                    (at.lat_e7, at.lon_e7),
                    usize::from(*k),
                    f64::from(*radius_m),
                    now_ms,
                    MAX_FIX_AGE_MS,
                    keep,
                )
                .into_iter()
                .map(|(t, _)| t)
                .collect()
        }
        Target::Station => station_consoles(org, issuer),
    };
    out.retain(|t| *t != issuer);
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(Refusal::NoRecipients);
    }
    Ok(out)
}

/// The consoles of `member`'s station: those of the nearest node at or
/// above the member's own that has a console other than the member.
pub fn station_consoles(org: &Org, member: TerminalId) -> Vec<TerminalId> {
    let mut node = org.terminal(member).map(|t| t.node);
    while let Some(n) = node {
        let consoles: Vec<TerminalId> = org
            .terminals()
            .filter(|t| t.node == n && t.id != member && t.is_console())
            .map(|t| t.id)
            .collect();
        if !consoles.is_empty() {
            return consoles;
        }
        node = org.node(GroupId(n)).and_then(|x| x.parent);
    }
    Vec::new()
}

/// A target as text, for the store and audit.
pub fn describe(target: &Target) -> String {
    match target {
        Target::Terminals(ids) => format!(
            "terminals {}",
            ids.iter()
                .map(|t| t.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
        Target::Group(g) => format!("group {}", g.0),
        Target::Subtree { node, roles } => format!("subtree {node} roles {roles:#04x}"),
        Target::Nearest { k, radius_m } => format!("nearest {k} within {radius_m} m"),
        Target::Station => "station".to_owned(),
    }
}
