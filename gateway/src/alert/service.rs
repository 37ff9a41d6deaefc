//! Who an alert reaches and whether its sender may send it: pure checks on
//! the org, used by sessions before anything is stored.

use std::time::{SystemTime, UNIX_EPOCH};

use ptt_codec::{AlertBody, ErrorCode, Target, TerminalId};

use crate::location::Positions;
use crate::org::{Org, Role};

/// Positions older than this do not count for nearest-member targeting:
/// ten minutes, twenty missed 30-second reports.
pub const MAX_FIX_AGE_MS: u64 = 10 * 60 * 1000;

/// Longest time-to-live: a week. An alert nobody picked up in a week is an
/// archive entry, not an alert.
pub const MAX_TTL_S: u32 = 7 * 24 * 3600;

/// Why an alert was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code for the wire.
    pub code: ErrorCode,
    /// Detail for logs and operators.
    pub message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Alert rules over the org.
#[derive(Debug, Clone, Copy)]
pub struct Service;

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

impl Service {
    /// Checks an alert and resolves its recipients (the sender excluded,
    /// each once, sorted). Only consoles send alerts, and only to terminals
    /// and nodes at or under their own node. A nearest-members target picks
    /// members (not consoles) under the sender, online (`online`), with a
    /// position no older than [`MAX_FIX_AGE_MS`].
    pub fn recipients(
        org: &Org,
        positions: &Positions,
        online: impl Fn(TerminalId) -> bool,
        issuer: TerminalId,
        body: &AlertBody,
        target: &Target,
    ) -> Result<Vec<TerminalId>, Refusal> {
        let sender = org
            .terminal(issuer)
            .ok_or_else(|| refuse(ErrorCode::TargetNotAllowed, "unknown sender"))?;
        match (body.kind.is_upward(), target) {
            (true, Target::Station) => {}
            (true, _) => {
                return Err(refuse(
                    ErrorCode::TargetNotAllowed,
                    "reports and clues go to your station (target: station)",
                ))
            }
            (false, Target::Station) => {
                return Err(refuse(
                    ErrorCode::AlertInvalid,
                    "the station target carries reports and clues only",
                ))
            }
            (false, _) if !sender.is_console() => {
                return Err(refuse(
                    ErrorCode::TargetNotAllowed,
                    "only consoles send alerts; members send reports and clues",
                ))
            }
            (false, _) => {}
        }
        if body.kind == ptt_codec::AlertKind::Sos {
            return Err(refuse(
                ErrorCode::AlertInvalid,
                "an SOS is raised with the Sos frame",
            ));
        }
        if body.title.trim().is_empty() {
            return Err(refuse(ErrorCode::AlertInvalid, "empty title"));
        }
        if body.ttl_s == 0 || body.ttl_s > MAX_TTL_S {
            return Err(refuse(
                ErrorCode::AlertInvalid,
                format!("time-to-live must be 1..={MAX_TTL_S} s"),
            ));
        }
        let scope = sender.node;
        let within = |node: u32| org.is_ancestor_or_self(scope, node);
        let mut out: Vec<TerminalId> = match target {
            Target::Terminals(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let t = org.terminal(*id).ok_or_else(|| {
                        refuse(
                            ErrorCode::TargetNotAllowed,
                            format!("unknown terminal {id}"),
                        )
                    })?;
                    if !within(t.node) {
                        return Err(refuse(
                            ErrorCode::TargetNotAllowed,
                            format!("terminal {id} is outside your command"),
                        ));
                    }
                    out.push(*id);
                }
                out
            }
            Target::Group(g) => {
                org.node(*g)
                    .ok_or_else(|| refuse(ErrorCode::UnknownGroup, format!("no group {g}")))?;
                if !within(g.0) {
                    return Err(refuse(
                        ErrorCode::TargetNotAllowed,
                        format!("group {g} is outside your command"),
                    ));
                }
                org.terminals()
                    .filter(|t| t.node == g.0)
                    .map(|t| t.id)
                    .collect()
            }
            Target::Subtree { node, roles } => {
                org.node(ptt_codec::GroupId(*node))
                    .ok_or_else(|| refuse(ErrorCode::UnknownGroup, format!("no node {node}")))?;
                if !within(*node) {
                    return Err(refuse(
                        ErrorCode::TargetNotAllowed,
                        format!("node {node} is outside your command"),
                    ));
                }
                org.terminals()
                    .filter(|t| org.is_ancestor_or_self(*node, t.node))
                    .filter(|t| *roles == 0 || roles & role_bit(t.role) != 0)
                    .map(|t| t.id)
                    .collect()
            }
            Target::Nearest { k, radius_m } => {
                let Some(at) = &body.location else {
                    return Err(refuse(
                        ErrorCode::AlertInvalid,
                        "a nearest-members alert needs the incident location",
                    ));
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
                        now_ms(),
                        MAX_FIX_AGE_MS,
                        keep,
                    )
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect()
            }
            Target::Station => Self::station_consoles(org, issuer),
        };
        out.retain(|t| *t != issuer);
        out.sort_unstable();
        out.dedup();
        if out.is_empty() {
            return Err(refuse(
                ErrorCode::AlertInvalid,
                "the target has no recipients",
            ));
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
            node = org.node(ptt_codec::GroupId(n)).and_then(|x| x.parent);
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
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
