//! Drill reports (拉动演练): how fast each unit answered a drill alert,
//! against the 1-, 3- and 8-minute marks, per unit, co-governance station
//! and police station.
//!
//! Pure arithmetic over the stored receipts and the org tree: the gateway
//! reads each recipient's [`Progress`] from its store and calls [`report`]
//! when a console asks (`DrillReportQuery`), and the `ptt-gateway
//! drill-report` command builds the same one from the database.
//!
//! For each unit that the drill reached (at least one recipient belongs to
//! it), three times from the drill's creation:
//! - **receipt**: the first member's terminal had it (any receipt);
//! - **accept**: the first member accepted (arriving counts as accepting);
//! - **arrive**: the first member arrived (resolving counts as arriving).
//!
//! Each time is compared with every mark (default 60, 180 and 480 s; in the
//! field: first responder on the line within 1 minute, unit at the scene
//! within 3, police at the scene within 8). Station and police-station rows
//! count their units: how many answered at all, how many within each mark,
//! and the median and slowest time. Recipients that do not belong to a unit
//! (station consoles) get the alert but are not timed.

use std::collections::BTreeMap;

use ptt_codec::{GroupId, TerminalId};
use ptt_org::{NodeKind, Org};
use serde::Serialize;

/// The default marks, seconds: 1, 3 and 8 minutes.
pub const DEFAULT_MARKS_S: [u32; 3] = [60, 180, 480];

/// One recipient's progress, from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The recipient.
    pub terminal: TerminalId,
    /// First receipt of any kind, Unix ms.
    pub receipt_ms: Option<u64>,
    /// Accepted (or arrived), Unix ms.
    pub accept_ms: Option<u64>,
    /// Arrived (or resolved), Unix ms.
    pub arrive_ms: Option<u64>,
}

/// How a group of units did on one measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measure {
    /// Units that reached this step at all.
    pub reached: u32,
    /// Units that reached it within each mark, in the order of `marks_s`.
    pub within: Vec<u32>,
    /// Median time of the units that reached it, seconds.
    pub median_s: Option<f64>,
    /// Slowest time of the units that reached it, seconds.
    pub max_s: Option<f64>,
}

/// What a row of the report counts. Serialised (JSON, CSV) as
/// [`Level::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One unit (`"unit"`).
    Unit,
    /// A co-governance station's units (`"co_station"`).
    CoStation,
    /// A police station's units (`"police_station"`).
    PoliceStation,
    /// Every unit the drill reached (`"total"`).
    Total,
}

impl Level {
    /// The level as the report's JSON and CSV write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Unit => "unit",
            Level::CoStation => "co_station",
            Level::PoliceStation => "police_station",
            Level::Total => "total",
        }
    }
}

/// One row of the report: a unit, a station, a police station or the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What the row counts.
    pub level: Level,
    /// The node (0 for the total).
    pub node: u32,
    /// Its name.
    pub name: String,
    /// The unit's co-governance station, or a station's police station.
    pub parent: Option<u32>,
    /// Units counted.
    pub units: u32,
    /// Recipients in these units.
    pub members: u32,
    /// First receipt.
    pub receipt: Measure,
    /// First acceptance.
    pub accept: Measure,
    /// First arrival.
    pub arrive: Measure,
}

/// A drill report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The drill alert.
    pub alert: u64,
    /// Its title.
    pub title: String,
    /// Who started it.
    pub issuer: u32,
    /// When it started, Unix ms.
    pub started_ms: u64,
    /// When this report was made, Unix ms.
    pub generated_ms: u64,
    /// The marks, seconds.
    pub marks_s: Vec<u32>,
    /// One row per unit, then per co-governance station, per police
    /// station, and the total, each level sorted by node id.
    pub rows: Vec<Row>,
}

/// What the report is made from.
#[derive(Debug, Clone)]
pub struct Drill<'a> {
    /// The drill alert.
    pub alert: u64,
    /// Its title.
    pub title: &'a str,
    /// Who started it.
    pub issuer: TerminalId,
    /// When it started, Unix ms.
    pub started_ms: u64,
    /// Every recipient's progress.
    pub progress: &'a [Progress],
}

/// Seconds from `start` to `at`; a clock step backwards counts as 0.
fn since(start: u64, at: Option<u64>) -> Option<f64> {
    at.map(|t| t.saturating_sub(start) as f64 / 1000.0)
}

fn earliest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The three times of one unit.
#[derive(Debug, Clone, Copy, Default)]
struct Times {
    members: u32,
    receipt: Option<f64>,
    accept: Option<f64>,
    arrive: Option<f64>,
}

fn measure(times: &[Option<f64>], marks_s: &[u32]) -> Measure {
    let mut reached: Vec<f64> = times.iter().flatten().copied().collect();
    reached.sort_by(f64::total_cmp);
    let median_s = match reached.len() {
        0 => None,
        n if n % 2 == 1 => Some(reached[n / 2]),
        n => Some((reached[n / 2 - 1] + reached[n / 2]) / 2.0),
    };
    Measure {
        reached: reached.len() as u32,
        within: marks_s
            .iter()
            .map(|m| reached.iter().filter(|t| **t <= f64::from(*m)).count() as u32)
            .collect(),
        median_s,
        max_s: reached.last().copied(),
    }
}

fn row(
    level: Level,
    node: u32,
    name: String,
    parent: Option<u32>,
    units: &[Times],
    marks_s: &[u32],
) -> Row {
    let pick = |f: fn(&Times) -> Option<f64>| units.iter().map(f).collect::<Vec<_>>();
    Row {
        level,
        node,
        name,
        parent,
        units: units.len() as u32,
        members: units.iter().map(|u| u.members).sum(),
        receipt: measure(&pick(|u| u.receipt), marks_s),
        accept: measure(&pick(|u| u.accept), marks_s),
        arrive: measure(&pick(|u| u.arrive), marks_s),
    }
}

/// Builds the report of `drill` at `generated_ms`.
pub fn report(org: &Org, drill: &Drill<'_>, marks_s: &[u32], generated_ms: u64) -> Report {
    let start = drill.started_ms;
    let mut units: BTreeMap<u32, Times> = BTreeMap::new();
    for p in drill.progress {
        let Some(t) = org.terminal(p.terminal) else {
            continue;
        };
        let is_unit = org
            .node(GroupId(t.node))
            .is_some_and(|n| n.kind == NodeKind::Unit);
        if !is_unit {
            continue;
        }
        let u = units.entry(t.node).or_default();
        u.members += 1;
        // Later steps imply the earlier ones: an arrival is an acceptance,
        // and any receipt shows the terminal had the alert.
        let arrive = since(start, p.arrive_ms);
        let accept = earliest(since(start, p.accept_ms), arrive);
        let receipt = earliest(since(start, p.receipt_ms), accept);
        u.receipt = earliest(u.receipt, receipt);
        u.accept = earliest(u.accept, accept);
        u.arrive = earliest(u.arrive, arrive);
    }
    let name = |n: u32| {
        org.node(GroupId(n))
            .map_or(String::new(), |n| n.name.clone())
    };
    let mut rows = Vec::new();
    let mut by_station: BTreeMap<u32, Vec<Times>> = BTreeMap::new();
    let mut by_police: BTreeMap<u32, Vec<Times>> = BTreeMap::new();
    for (&unit, times) in &units {
        let station = org.ancestor_of_kind(unit, NodeKind::Station);
        let police = org.ancestor_of_kind(unit, NodeKind::PoliceStation);
        rows.push(row(
            Level::Unit,
            unit,
            name(unit),
            station.or(police),
            std::slice::from_ref(times),
            marks_s,
        ));
        if let Some(s) = station {
            by_station.entry(s).or_default().push(*times);
        }
        if let Some(p) = police {
            by_police.entry(p).or_default().push(*times);
        }
    }
    for (s, times) in &by_station {
        let police = org.ancestor_of_kind(*s, NodeKind::PoliceStation);
        rows.push(row(Level::CoStation, *s, name(*s), police, times, marks_s));
    }
    for (p, times) in &by_police {
        rows.push(row(
            Level::PoliceStation,
            *p,
            name(*p),
            None,
            times,
            marks_s,
        ));
    }
    let all: Vec<Times> = units.values().copied().collect();
    rows.push(row(Level::Total, 0, String::new(), None, &all, marks_s));
    Report {
        alert: drill.alert,
        title: drill.title.to_owned(),
        issuer: drill.issuer.0,
        started_ms: start,
        generated_ms,
        marks_s: marks_s.to_vec(),
        rows,
    }
}

impl Report {
    /// As JSON: the document `DrillReport` carries and the CLI exports.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// As CSV: one line per row, one column per measure and mark
    /// (`accept_within_60s`), times in seconds, empty when not reached.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header: Vec<String> = ["level", "node", "name", "parent", "units", "members"]
            .map(String::from)
            .to_vec();
        for m in ["receipt", "accept", "arrive"] {
            header.push(format!("{m}_reached"));
            for s in &self.marks_s {
                header.push(format!("{m}_within_{s}s"));
            }
            header.push(format!("{m}_median_s"));
            header.push(format!("{m}_max_s"));
        }
        w.write_record(&header).expect("writing to memory");
        let secs = |v: Option<f64>| v.map_or(String::new(), |s| format!("{s:.1}"));
        for r in &self.rows {
            let mut rec = vec![
                r.level.as_str().to_owned(),
                r.node.to_string(),
                r.name.clone(),
                r.parent.map_or(String::new(), |p| p.to_string()),
                r.units.to_string(),
                r.members.to_string(),
            ];
            for m in [&r.receipt, &r.accept, &r.arrive] {
                rec.push(m.reached.to_string());
                rec.extend(m.within.iter().map(u32::to_string));
                rec.push(secs(m.median_s));
                rec.push(secs(m.max_s));
            }
            w.write_record(&rec).expect("writing to memory");
        }
        String::from_utf8(w.into_inner().expect("flushing to memory")).expect("CSV of UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Police station 10 with co-governance station 100 (units 1001,
    /// 1002) and station 200 (unit 2001).
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
            id = 100
            parent = 10
            kind = "station"
            name = "一站"
            [[node]]
            id = 200
            parent = 10
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
            id = 11
            node = 1001
            role = "security_guard"
            kind = "handheld"
            name = "a"
            [[terminal]]
            id = 12
            node = 1001
            role = "security_guard"
            kind = "handheld"
            name = "b"
            [[terminal]]
            id = 21
            node = 1002
            role = "volunteer"
            kind = "phone_app"
            name = "c"
            [[terminal]]
            id = 31
            node = 2001
            role = "auxiliary_police"
            kind = "handheld"
            name = "d"
            "#,
            std::path::Path::new("."),
        )
        .unwrap()
    }

    const T0: u64 = 1_700_000_000_000;

    fn p(t: u32, receipt: Option<u64>, accept: Option<u64>, arrive: Option<u64>) -> Progress {
        let at = |s: Option<u64>| s.map(|s| T0 + s * 1000);
        Progress {
            terminal: TerminalId(t),
            receipt_ms: at(receipt),
            accept_ms: at(accept),
            arrive_ms: at(arrive),
        }
    }

    fn row_of(r: &Report, level: Level, node: u32) -> &Row {
        r.rows
            .iter()
            .find(|x| x.level == level && x.node == node)
            .unwrap_or_else(|| panic!("no {level:?} row {node}"))
    }

    #[test]
    fn units_take_their_fastest_member_and_stations_count_units() {
        let progress = [
            // Unit 1001: b accepts at 50 s, a arrives at 170 s.
            p(11, Some(2), None, Some(170)),
            p(12, Some(3), Some(50), None),
            // Unit 1002: accepts late, arrives after 8 minutes.
            p(21, Some(5), Some(200), Some(500)),
            // Unit 2001: never answered beyond the delivery.
            p(31, Some(1), None, None),
            // The station console is not a unit: not timed.
            p(9, Some(0), Some(0), Some(0)),
        ];
        let drill = Drill {
            alert: 7,
            title: "拉动演练",
            issuer: TerminalId(9),
            started_ms: T0,
            progress: &progress,
        };
        let r = report(&org(), &drill, &DEFAULT_MARKS_S, T0 + 600_000);

        let u1 = row_of(&r, Level::Unit, 1001);
        assert_eq!((u1.members, u1.parent), (2, Some(100)));
        assert_eq!(u1.receipt.median_s, Some(2.0));
        assert_eq!(u1.accept.median_s, Some(50.0));
        assert_eq!(u1.accept.within, [1, 1, 1]);
        assert_eq!(u1.arrive.median_s, Some(170.0));
        assert_eq!(u1.arrive.within, [0, 1, 1]);
        let u2 = row_of(&r, Level::Unit, 1002);
        assert_eq!(u2.arrive.within, [0, 0, 0]);
        assert_eq!(u2.arrive.max_s, Some(500.0));
        let u3 = row_of(&r, Level::Unit, 2001);
        assert_eq!((u3.accept.reached, u3.accept.median_s), (0, None));

        let s1 = row_of(&r, Level::CoStation, 100);
        assert_eq!((s1.units, s1.members, s1.parent), (2, 3, Some(10)));
        assert_eq!(s1.accept.within, [1, 1, 2]);
        assert_eq!(s1.accept.median_s, Some(125.0));
        assert_eq!(s1.arrive.max_s, Some(500.0));
        let ps = row_of(&r, Level::PoliceStation, 10);
        assert_eq!((ps.units, ps.members), (3, 4));
        assert_eq!(ps.receipt.within, [3, 3, 3]);
        assert_eq!(ps.accept.reached, 2);
        assert_eq!(ps.arrive.within, [0, 1, 1]);
        let total = r.rows.last().unwrap();
        assert_eq!((total.level, total.units), (Level::Total, 3));
        // Units first, then stations, police stations, total.
        let levels: Vec<_> = r.rows.iter().map(|x| x.level).collect();
        assert_eq!(
            levels,
            [
                Level::Unit,
                Level::Unit,
                Level::Unit,
                Level::CoStation,
                Level::CoStation,
                Level::PoliceStation,
                Level::Total
            ]
        );
    }

    #[test]
    fn later_steps_imply_earlier_ones_and_marks_are_inclusive() {
        // Offline until it arrived: arrival counts as receipt and acceptance.
        let progress = [p(31, None, None, Some(180))];
        let drill = Drill {
            alert: 1,
            title: "t",
            issuer: TerminalId(9),
            started_ms: T0,
            progress: &progress,
        };
        let r = report(&org(), &drill, &[60, 180], T0);
        let u = row_of(&r, Level::Unit, 2001);
        assert_eq!(u.receipt.median_s, Some(180.0));
        assert_eq!(u.accept.within, [0, 1]);
        assert_eq!(u.arrive.within, [0, 1]);
        assert_eq!(r.marks_s, [60, 180]);
    }

    #[test]
    fn csv_and_json_carry_every_row() {
        let progress = [p(11, Some(1), Some(30), Some(100))];
        let drill = Drill {
            alert: 3,
            title: "演练, \"夜间\"",
            issuer: TerminalId(9),
            started_ms: T0,
            progress: &progress,
        };
        let r = report(&org(), &drill, &DEFAULT_MARKS_S, T0);
        let csv = r.to_csv();
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("level,node,name,parent,units,members,receipt_reached,"));
        assert!(header.contains("accept_within_60s"));
        assert_eq!(
            lines.next().unwrap(),
            "unit,1001,单元1,100,1,1,1,1,1,1,1.0,1.0,1,1,1,1,30.0,30.0,1,0,1,1,100.0,100.0"
        );
        assert_eq!(csv.lines().count(), 1 + 4);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["title"], "演练, \"夜间\"");
        assert_eq!(json["rows"].as_array().unwrap().len(), 4);
        assert_eq!(json["rows"][0]["arrive"]["within"][1], 1);
        let levels: Vec<_> = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["unit", "co_station", "police_station", "total"]);
        assert!(r.to_json().contains("\n      \"level\": \"unit\",\n"));
    }
}
