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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Fix;
    use ptt_codec::Location;

    /// Police station 10 (console 9) with station 100 (console 19), units
    /// 1001 (guard 11, volunteer 12) and 1002 (guard 21); police station 20
    /// (station 200, unit 2001, guard 31) is outside station 100's command.
    fn org() -> Org {
        Org::from_toml(
            r#"
            [[node]]
            id = 1
            kind = "city"
            name = "市"
            [[node]]
            id = 2
            parent = 1
            kind = "district"
            name = "区"
            [[node]]
            id = 10
            parent = 2
            kind = "police_station"
            name = "城南派出所"
            [[node]]
            id = 20
            parent = 2
            kind = "police_station"
            name = "城北派出所"
            [[node]]
            id = 100
            parent = 10
            kind = "station"
            name = "一站"
            [[node]]
            id = 200
            parent = 20
            kind = "station"
            name = "二站"
            [[node]]
            id = 1001
            parent = 100
            kind = "unit"
            name = "单元1"
            [[node]]
            id = 1002
            parent = 100
            kind = "unit"
            name = "单元2"
            [[node]]
            id = 2001
            parent = 200
            kind = "unit"
            name = "单元3"
            [[terminal]]
            id = 9
            node = 10
            role = "dispatcher"
            kind = "console"
            name = "指挥室"
            [[terminal]]
            id = 19
            node = 100
            role = "staff"
            kind = "console"
            name = "一站台"
            [[terminal]]
            id = 11
            node = 1001
            role = "security_guard"
            kind = "handheld"
            name = "a"
            [[terminal]]
            id = 12
            node = 1001
            role = "volunteer"
            kind = "phone_app"
            name = "b"
            [[terminal]]
            id = 21
            node = 1002
            role = "security_guard"
            kind = "handheld"
            name = "c"
            [[terminal]]
            id = 31
            node = 2001
            role = "security_guard"
            kind = "handheld"
            name = "d"
            "#,
            std::path::Path::new("."),
        )
        .unwrap()
    }

    const NOW: u64 = 1_700_000_000_000;

    fn body(kind: AlertKind) -> AlertBody {
        AlertBody {
            kind,
            priority: 2,
            ttl_s: 600,
            title: "巡逻".into(),
            text: String::new(),
            location: None,
            attachments: Vec::new(),
        }
    }

    fn resolve_now(issuer: u32, body: &AlertBody, target: &Target) -> Result<Vec<u32>, Refusal> {
        let positions = Positions::default();
        resolve(
            &org(),
            &positions,
            |_| true,
            TerminalId(issuer),
            body,
            target,
            NOW,
        )
        .map(|ids| ids.into_iter().map(|t| t.0).collect())
    }

    #[test]
    fn consoles_reach_only_what_they_command() {
        let dispatch = body(AlertKind::Dispatch);
        assert_eq!(
            resolve_now(19, &dispatch, &Target::Group(GroupId(1001))),
            Ok(vec![11, 12])
        );
        // A subtree with a role filter: guards only (bit 4), sender excluded.
        assert_eq!(
            resolve_now(9, &dispatch, &Target::Subtree { node: 10, roles: 4 }),
            Ok(vec![11, 21])
        );
        assert_eq!(
            resolve_now(9, &dispatch, &Target::Subtree { node: 10, roles: 0 }),
            Ok(vec![11, 12, 19, 21])
        );
        let outside = resolve_now(19, &dispatch, &Target::Group(GroupId(2001)));
        assert_eq!(outside, Err(Refusal::GroupOutside(GroupId(2001))));
        let refusal = outside.unwrap_err();
        assert_eq!(refusal.to_code(), ErrorCode::TargetNotAllowed);
        assert_eq!(refusal.to_string(), "group G2001 is outside your command");
        assert_eq!(
            resolve_now(19, &dispatch, &Target::Terminals(vec![TerminalId(31)])),
            Err(Refusal::TerminalOutside(TerminalId(31)))
        );
        assert_eq!(
            resolve_now(19, &dispatch, &Target::Group(GroupId(77)))
                .unwrap_err()
                .to_code(),
            ErrorCode::UnknownGroup
        );
    }

    #[test]
    fn members_report_to_their_station_only() {
        let report = body(AlertKind::Report);
        assert_eq!(resolve_now(11, &report, &Target::Station), Ok(vec![19]));
        assert_eq!(
            resolve_now(
                11,
                &body(AlertKind::Dispatch),
                &Target::Group(GroupId(1001))
            ),
            Err(Refusal::NotConsole)
        );
        assert_eq!(
            resolve_now(11, &report, &Target::Group(GroupId(1001))),
            Err(Refusal::UpwardNotToStation)
        );
        assert_eq!(
            resolve_now(19, &body(AlertKind::Dispatch), &Target::Station)
                .unwrap_err()
                .to_code(),
            ErrorCode::AlertInvalid
        );
        assert_eq!(station_consoles(&org(), TerminalId(19)), [TerminalId(9)]);
    }

    #[test]
    fn the_body_is_checked_before_the_target() {
        let mut b = body(AlertKind::Dispatch);
        b.ttl_s = MAX_TTL_S + 1;
        let ttl = resolve_now(9, &b, &Target::Group(GroupId(1001))).unwrap_err();
        assert_eq!(ttl.to_string(), "time-to-live must be 1..=604800 s");
        assert_eq!(ttl.to_code(), ErrorCode::AlertInvalid);
        b.ttl_s = 60;
        b.title = "  ".into();
        assert_eq!(
            resolve_now(9, &b, &Target::Group(GroupId(1001))),
            Err(Refusal::EmptyTitle)
        );
        assert_eq!(
            resolve_now(9, &body(AlertKind::Sos), &Target::Group(GroupId(1001))),
            Err(Refusal::Sos)
        );
        assert_eq!(
            resolve_now(1234, &body(AlertKind::Dispatch), &Target::Station),
            Err(Refusal::UnknownSender)
        );
    }

    #[test]
    fn nearest_members_are_online_fresh_members_in_command() {
        let positions = Positions::default();
        let fix = |lat_e7, at_ms| Fix {
            lat_e7,
            lon_e7: 1_196_400_000,
            accuracy_m: 5,
            at_ms,
        };
        let incident = 290_800_000;
        positions.update(TerminalId(11), fix(incident + 1_000, NOW - 1_000));
        positions.update(TerminalId(12), fix(incident + 2_000, NOW - 1_000));
        // Fresh but offline; fresh but a console; stale; outside command.
        positions.update(TerminalId(21), fix(incident + 500, NOW - 1_000));
        positions.update(TerminalId(19), fix(incident, NOW - 1_000));
        positions.update(TerminalId(31), fix(incident + 100, NOW - 1_000));
        let mut b = body(AlertKind::Dispatch);
        let target = Target::Nearest {
            k: 3,
            radius_m: 5_000,
        };
        let run = |b: &AlertBody, now_ms| {
            resolve(
                &org(),
                &positions,
                |t| t != TerminalId(21),
                TerminalId(19),
                b,
                &target,
                now_ms,
            )
        };
        assert_eq!(run(&b, NOW), Err(Refusal::NoLocation));
        b.location = Some(Location {
            lat_e7: incident,
            lon_e7: 1_196_400_000,
            address: String::new(),
        });
        assert_eq!(run(&b, NOW), Ok(vec![TerminalId(11), TerminalId(12)]));
        // Ten minutes and a bit later every fix is too old.
        assert_eq!(
            run(&b, NOW + MAX_FIX_AGE_MS + 1),
            Err(Refusal::NoRecipients)
        );
    }

    #[test]
    fn targets_are_described_for_the_store() {
        assert_eq!(
            describe(&Target::Terminals(vec![TerminalId(1), TerminalId(2)])),
            "terminals 1,2"
        );
        assert_eq!(
            describe(&Target::Subtree { node: 10, roles: 4 }),
            "subtree 10 roles 0x04"
        );
        assert_eq!(describe(&Target::Station), "station");
    }
}
