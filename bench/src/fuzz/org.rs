//! Targets for the pure rules over the org that a peer's input reaches:
//! who an alert goes to (and join rights), credential checks, and drill
//! report arithmetic, on a small city built once.

use std::sync::OnceLock;

use ptt_codec::{AlertKind, GroupId, Target, TerminalId};
use ptt_gateway_core::alert::MAX_TTL_S;
use ptt_gateway_core::drill::{self, Level, Progress};
use ptt_gateway_core::location::{distance_m, Fix, Positions};
use ptt_gateway_core::recipients::{self, MAX_FIX_AGE_MS};
use ptt_org::auth::ProvisioningKey;
use ptt_org::{Org, Policy};

use crate::codec::{alert_body, coordinates, target};
use crate::input::Source;
use crate::Outcome;

/// A small city: two police stations, three co-governance stations, five
/// units, consoles at three levels, every role and terminal kind.
const ORG: &str = r#"
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
id = 101
parent = 10
kind = "station"
name = "二站"
[[node]]
id = 200
parent = 20
kind = "station"
name = "三站"
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
id = 1011
parent = 101
kind = "unit"
name = "单元3"
[[node]]
id = 2001
parent = 200
kind = "unit"
name = "单元4"
[[node]]
id = 2002
parent = 200
kind = "unit"
name = "单元5"
[[terminal]]
id = 1
node = 2
role = "dispatcher"
kind = "console"
name = "区指挥中心"
[[terminal]]
id = 2
node = 10
role = "dispatcher"
kind = "console"
name = "城南指挥室"
[[terminal]]
id = 3
node = 100
role = "staff"
kind = "console"
name = "一站台"
[[terminal]]
id = 4
node = 200
role = "staff"
kind = "console"
name = "三站台"
[[terminal]]
id = 5
node = 10
role = "police"
kind = "handheld"
name = "民警"
[[terminal]]
id = 6
node = 10
role = "auxiliary_police"
kind = "phone_app"
name = "辅警"
[[terminal]]
id = 7
node = 1001
role = "security_guard"
kind = "handheld"
name = "a"
[[terminal]]
id = 8
node = 1001
role = "volunteer"
kind = "phone_app"
name = "b"
[[terminal]]
id = 9
node = 1002
role = "security_guard"
kind = "handheld"
name = "c"
[[terminal]]
id = 10
node = 1002
role = "staff"
kind = "screen_terminal"
name = "d"
[[terminal]]
id = 11
node = 1011
role = "security_guard"
kind = "handheld"
name = "e"
[[terminal]]
id = 12
node = 2001
role = "security_guard"
kind = "handheld"
name = "f"
[[terminal]]
id = 13
node = 2002
role = "volunteer"
kind = "phone_app"
name = "g"
[[terminal]]
id = 14
node = 100
role = "security_guard"
kind = "handheld"
name = "h"
"#;

/// Terminal ids 1..=ORG_IDS cover the org and some strangers.
const ORG_IDS: u32 = 17;
/// Node ids worth targeting, with strangers.
const NODES: [u32; 14] = [
    0, 1, 2, 10, 20, 100, 101, 200, 1001, 1002, 1011, 2001, 2002, 3,
];

fn org() -> &'static Org {
    static ORG_CELL: OnceLock<Org> = OnceLock::new();
    ORG_CELL.get_or_init(|| {
        Org::from_toml(ORG, std::path::Path::new(".")).expect("the fuzz org is valid")
    })
}

/// A terminal of the org mostly (1 when the input has run out), a
/// stranger sometimes.
fn org_terminal(s: &mut Source<'_>) -> TerminalId {
    if s.u8() % 16 == 15 {
        TerminalId(s.u32())
    } else {
        TerminalId(1 + u32::from(s.u8()) % ORG_IDS)
    }
}

fn org_node(s: &mut Source<'_>) -> u32 {
    if s.u8() % 16 == 15 {
        s.u32()
    } else {
        s.pick(&NODES)
    }
}

/// A target aimed at the org: ids of its terminals and nodes.
fn org_target(s: &mut Source<'_>) -> Target {
    match target(s) {
        Target::Terminals(ids) => Target::Terminals(ids.iter().map(|_| org_terminal(s)).collect()),
        Target::Group(_) => Target::Group(GroupId(org_node(s).max(1))),
        Target::Subtree { roles, .. } => Target::Subtree {
            node: org_node(s).max(1),
            roles,
        },
        t => t,
    }
}

fn role_bit(role: ptt_org::Role) -> u8 {
    use ptt_org::Role;
    match role {
        Role::Police => 1,
        Role::AuxiliaryPolice => 2,
        Role::SecurityGuard => 4,
        Role::Staff => 8,
        Role::Volunteer => 16,
        Role::Dispatcher => 32,
    }
}

/// Check of the `recipients` target: who an alert from any sender with any
/// body and target reaches, with terminals reporting any positions, and
/// the join rights behind every group.
pub fn check_recipients(input: &[u8]) -> Result<Outcome, String> {
    let org = org();
    let mut s = Source::new(input);
    let positions = Positions::default();
    let now_ms = match s.u8() % 3 {
        0 => u64::from(s.u32()),
        1 => 1_800_000_000_000,
        _ => s.any_u64(),
    };
    let mut issuer = org_terminal(&mut s);
    let mut target = org_target(&mut s);
    let mut body = alert_body(&mut s);
    // Most cases get past the outer checks, so that the recipient rules
    // themselves run: a console (or, for reports, a member) with a
    // plausible body and a target of the right direction.
    if s.u8() % 4 != 3 {
        body.ttl_s = s.pick(&[1, 3600, MAX_TTL_S]);
        if body.title.trim().is_empty() {
            body.title = "演练".to_owned();
        }
        if body.kind == AlertKind::Sos {
            body.kind = AlertKind::Dispatch;
        }
        if body.kind.is_upward() {
            target = Target::Station;
        } else {
            issuer = TerminalId(1 + s.below(4) as u32);
            if target == Target::Station {
                target = Target::Subtree { node: 2, roles: 0 };
            }
        }
    } else if s.bool() {
        body.ttl_s = s.pick(&[0, 1, 3600, MAX_TTL_S, MAX_TTL_S + 1]);
    }
    let online_mask = !s.u32();
    let online = |t: TerminalId| t.0 < 32 && online_mask >> t.0 & 1 == 1;
    for _ in 0..s.below(24) {
        let t = org_terminal(&mut s);
        let (mut lat_e7, mut lon_e7) = coordinates(&mut s);
        if let (Some(at), true) = (&body.location, s.u8() % 4 != 3) {
            // Within a few kilometres of the incident, where nearest-member
            // targeting looks.
            let near = |c: i32, s: &mut Source<'_>, max: i32| {
                (c + (i32::from(s.u16()) - 32_768) * 10).clamp(-max, max)
            };
            lat_e7 = near(at.lat_e7, &mut s, 900_000_000);
            lon_e7 = near(at.lon_e7, &mut s, 1_800_000_000);
        }
        let age = match s.u8() % 3 {
            0 => 0,
            1 => MAX_FIX_AGE_MS + u64::from(s.u8()) - 128,
            _ => s.any_u64(),
        };
        positions.update(
            t,
            Fix {
                lat_e7,
                lon_e7,
                accuracy_m: s.u16(),
                at_ms: now_ms.wrapping_sub(age),
            },
        );
    }
    let _ = recipients::describe(&target);
    let got = recipients::resolve(org, &positions, online, issuer, &body, &target, now_ms);
    let outcome = match got {
        Err(refusal) => {
            let _ = (refusal.to_code(), refusal.to_string());
            use recipients::Refusal as R;
            match refusal {
                R::UnknownSender => "refused: unknown sender",
                R::UpwardNotToStation | R::DownwardToStation => "refused: direction",
                R::NotConsole => "refused: not a console",
                R::Sos | R::EmptyTitle | R::Ttl => "refused: body",
                R::UnknownTerminal(_) | R::UnknownGroup(_) | R::UnknownNode(_) => {
                    "refused: unknown target"
                }
                R::TerminalOutside(_) | R::GroupOutside(_) | R::NodeOutside(_) => {
                    "refused: outside command"
                }
                R::NoLocation => "refused: no location",
                R::NoRecipients => "refused: nobody",
                _ => "refused: other",
            }
        }
        Ok(list) => {
            let sender = org
                .terminal(issuer)
                .ok_or("an alert from a stranger was accepted")?;
            ensure!(!list.is_empty(), "accepted with no recipients");
            ensure!(
                list.windows(2).all(|w| w[0] < w[1]),
                "recipients not sorted and unique: {list:?}"
            );
            ensure!(!list.contains(&issuer), "the sender receives its own alert");
            ensure!(body.kind != AlertKind::Sos, "an SOS sent as an alert");
            ensure!(!body.title.trim().is_empty(), "an empty title accepted");
            ensure!(
                (1..=MAX_TTL_S).contains(&body.ttl_s),
                "ttl {} accepted",
                body.ttl_s
            );
            ensure!(
                body.kind.is_upward() == matches!(target, Target::Station),
                "{:?} accepted for {target:?}",
                body.kind
            );
            if !body.kind.is_upward() {
                ensure!(sender.is_console(), "a member sent a {:?}", body.kind);
            }
            for id in &list {
                let t = org
                    .terminal(*id)
                    .ok_or_else(|| format!("recipient {id} is not in the org"))?;
                match &target {
                    Target::Station => ensure!(
                        t.is_console() && org.is_ancestor_or_self(t.node, sender.node),
                        "report to {id}, not a console of the sender's station"
                    ),
                    _ => ensure!(
                        org.is_ancestor_or_self(sender.node, t.node),
                        "{id} is outside the sender's command"
                    ),
                }
                match &target {
                    Target::Group(g) => ensure!(t.node == g.0, "{id} is not in {g}"),
                    Target::Subtree { node, roles } => ensure!(
                        org.is_ancestor_or_self(*node, t.node)
                            && (*roles == 0 || roles & role_bit(t.role) != 0),
                        "{id} does not match the subtree filter"
                    ),
                    Target::Nearest { radius_m, .. } => {
                        let at = body.location.as_ref().ok_or("nearest without a location")?;
                        let fix = positions.last(*id).ok_or("nearest without a fix")?;
                        ensure!(online(*id) && !t.is_console(), "{id} offline or a console");
                        ensure!(
                            now_ms.saturating_sub(fix.at_ms) <= MAX_FIX_AGE_MS,
                            "{id}'s fix is stale"
                        );
                        let d = distance_m((at.lat_e7, at.lon_e7), (fix.lat_e7, fix.lon_e7));
                        ensure!(
                            d <= f64::from(*radius_m) + 1.0,
                            "{id} is {d} m away, beyond {radius_m} m"
                        );
                    }
                    _ => {}
                }
            }
            if let Target::Nearest { k, .. } = target {
                ensure!(list.len() <= usize::from(k), "more than {k} nearest");
            }
            "delivered"
        }
    };
    for c in recipients::station_consoles(org, issuer) {
        let t = org.terminal(c).ok_or("a station console not in the org")?;
        ensure!(
            t.is_console() && c != issuer,
            "{c} is not a station console"
        );
    }
    // Join rights: a console only at or under its node.
    let policy = Policy::default();
    let group = GroupId(org_node(&mut s));
    if let (Ok(rights), Some(t)) = (org.rights(&policy, issuer, group), org.terminal(issuer)) {
        ensure!(rights.listen || !rights.talk, "talk without listen");
        if t.is_console() {
            ensure!(
                org.is_ancestor_or_self(t.node, group.0),
                "console {issuer} joins {group} outside its node"
            );
        }
    }
    Ok(outcome)
}

/// Check of the `credential` target: a Hello's credential is accepted
/// exactly when it is the terminal's, whatever its length.
pub fn check_credential(input: &[u8]) -> Result<Outcome, String> {
    let mut s = Source::new(input);
    let key = ProvisioningKey::from_bytes(std::array::from_fn(|_| s.u8()));
    let terminal = TerminalId(s.id_u32());
    let real = key.credential(terminal);
    let mut presented: Vec<u8> = match s.u8() % 5 {
        0 => real.to_vec(),
        1 => real[..s.below(32)].to_vec(),
        2 => {
            let mut v = real.to_vec();
            v.extend((0..1 + s.below(40)).map(|_| s.u8()));
            v
        }
        3 => key.credential(TerminalId(terminal.0 ^ 1)).to_vec(),
        _ => (0..s.below(80)).map(|_| s.u8()).collect(),
    };
    if s.bool() && !presented.is_empty() {
        let i = s.below(presented.len());
        presented[i] ^= 1 << (s.u8() % 8);
    }
    let accepted = key.verify(terminal, &presented);
    ensure!(
        accepted == (presented == real),
        "verify({terminal}, {} bytes) = {accepted}",
        presented.len()
    );
    Ok(if accepted { "accepted" } else { "refused" })
}

/// Check of the `drill` target: a drill report from any receipts (times
/// before the start, far in the future, missing steps), any marks and any
/// title, and its JSON and CSV.
pub fn check_drill(input: &[u8]) -> Result<Outcome, String> {
    let org = org();
    let mut s = Source::new(input);
    let started_ms = match s.u8() % 3 {
        0 => 0,
        1 => 1_800_000_000_000,
        _ => s.any_u64(),
    };
    let at = |s: &mut Source<'_>| -> Option<u64> {
        match s.u8() % 5 {
            0 => None,
            1 => Some(started_ms.saturating_add(u64::from(s.u16()) * 100)),
            2 => Some(started_ms.wrapping_sub(u64::from(s.u8()))),
            3 => Some(s.any_u64()),
            _ => Some(started_ms.saturating_add(u64::from(s.u32()))),
        }
    };
    let progress: Vec<Progress> = (0..s.below(40))
        .map(|_| Progress {
            terminal: org_terminal(&mut s),
            receipt_ms: at(&mut s),
            accept_ms: at(&mut s),
            arrive_ms: at(&mut s),
        })
        .collect();
    let marks: Vec<u32> = match s.u8() % 4 {
        0 => drill::DEFAULT_MARKS_S.to_vec(),
        1 => Vec::new(),
        _ => (0..s.below(6))
            .map(|_| {
                let any = s.u32();
                s.pick(&[0, 1, 60, 180, 480, u32::MAX, any])
            })
            .collect(),
    };
    let title = s.string(ptt_codec::alert::MAX_TITLE);
    let d = drill::Drill {
        alert: s.any_u64(),
        title: &title,
        issuer: TerminalId(s.id_u32()),
        started_ms,
        progress: &progress,
    };
    let report = drill::report(org, &d, &marks, s.any_u64());
    let rows = &report.rows;
    let total = rows.last().ok_or("a report without its total")?;
    ensure!(total.level == Level::Total, "the last row is not the total");
    let order = |l: Level| match l {
        Level::Unit => 0,
        Level::CoStation => 1,
        Level::PoliceStation => 2,
        Level::Total => 3,
    };
    ensure!(
        rows.windows(2)
            .all(|w| (order(w[0].level), w[0].node) < (order(w[1].level), w[1].node)),
        "rows out of order"
    );
    let units: Vec<_> = rows.iter().filter(|r| r.level == Level::Unit).collect();
    ensure!(
        total.units as usize == units.len(),
        "total counts other units"
    );
    ensure!(
        total.members == units.iter().map(|r| r.members).sum::<u32>()
            && total.members as usize <= progress.len(),
        "total counts other members"
    );
    for r in rows {
        ensure!(
            r.level != Level::Unit || r.units == 1,
            "a unit row of several"
        );
        for m in [&r.receipt, &r.accept, &r.arrive] {
            ensure!(m.reached <= r.units, "more reached than units");
            ensure!(m.within.len() == marks.len(), "a count per mark");
            for (i, w) in m.within.iter().enumerate() {
                ensure!(*w <= m.reached, "more within a mark than reached");
                for (j, v) in m.within.iter().enumerate() {
                    if marks[i] <= marks[j] {
                        ensure!(w <= v, "fewer within a longer mark");
                    }
                }
            }
            ensure!(
                m.median_s.is_some() == (m.reached > 0) && m.max_s.is_some() == (m.reached > 0),
                "median or maximum without times"
            );
            if let (Some(med), Some(max)) = (m.median_s, m.max_s) {
                ensure!(
                    med.is_finite() && (0.0..=max).contains(&med),
                    "median {med} outside 0..={max}"
                );
            }
        }
        ensure!(
            r.receipt.reached >= r.accept.reached && r.accept.reached >= r.arrive.reached,
            "a later step reached by more units than an earlier one"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json())
        .map_err(|e| format!("the report's JSON does not parse: {e}"))?;
    ensure!(
        json["title"] == title.as_str()
            && json["rows"].as_array().map(Vec::len) == Some(rows.len()),
        "the JSON says something else"
    );
    let csv = report.to_csv();
    ensure!(
        csv.lines().count() == rows.len() + 1,
        "CSV of {} lines for {} rows",
        csv.lines().count(),
        rows.len()
    );
    Ok(if units.is_empty() {
        "no unit"
    } else {
        "units timed"
    })
}
