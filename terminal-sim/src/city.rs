//! Generates a city's org file shaped like the ones in FIELD.md: Jinhua has
//! 7,019 co-governance units of 3-5 members (at least two security guards
//! and one staff member or volunteer, about one unit in three led by police),
//! 1-3 units per co-governance station, stations grouped under police
//! stations, police stations under districts, and a command-room console per
//! police station, per district and for the city.

use std::path::Path;

use anyhow::Context;
use ptt_org::auth::ProvisioningKey;
use ptt_org::{AuthSection, File, NodeEntry, NodeKind, Role, TerminalEntry, TerminalKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What city to generate.
#[derive(Debug, Clone)]
pub struct CityParams {
    /// Co-governance units.
    pub units: usize,
    /// Random seed: the same seed and size give the same city.
    pub seed: u64,
    /// City name.
    pub name: String,
}

/// Counts of a generated city.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Co-governance units.
    pub units: usize,
    /// Co-governance stations.
    pub stations: usize,
    /// Police stations.
    pub police_stations: usize,
    /// Districts and counties.
    pub districts: usize,
    /// Terminals, consoles included.
    pub terminals: usize,
    /// Consoles.
    pub consoles: usize,
}

/// A generated city.
#[derive(Debug, Clone)]
pub struct City {
    /// The org file content (without `[auth]`).
    pub file: File,
    /// Its counts.
    pub summary: Summary,
}

const DISTRICTS: [&str; 9] = [
    "婺城区",
    "金东区",
    "兰溪市",
    "义乌市",
    "东阳市",
    "永康市",
    "武义县",
    "浦江县",
    "磐安县",
];
const PRECINCTS: [&str; 12] = [
    "城东", "城西", "城南", "城北", "江南", "江北", "新狮", "三江", "西关", "秋滨", "雅畈", "罗店",
];
const STREETS: [&str; 10] = [
    "人民路",
    "解放路",
    "八一街",
    "宾虹路",
    "双龙街",
    "丹溪路",
    "婺州街",
    "李渔路",
    "环城路",
    "城南路",
];
const SITES: [&str; 10] = [
    "万达广场",
    "中心医院",
    "夜市",
    "实验小学",
    "工业园",
    "KTV",
    "火车站",
    "商贸城",
    "农贸市场",
    "汽车站",
];
const SURNAMES: [&str; 20] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗",
];
const GIVEN: [&str; 20] = [
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超",
    "秀英", "建华", "志强", "丽", "婷",
];

struct Builder {
    rng: StdRng,
    file: File,
    next_node: u32,
    next_terminal: u32,
    summary: Summary,
}

impl Builder {
    fn node(&mut self, parent: Option<u32>, kind: NodeKind, name: String) -> u32 {
        self.next_node += 1;
        let id = self.next_node;
        self.file.nodes.push(NodeEntry {
            id,
            parent,
            kind,
            name,
        });
        id
    }

    fn person(&mut self) -> String {
        let s = SURNAMES[self.rng.gen_range(0..SURNAMES.len())];
        let g = GIVEN[self.rng.gen_range(0..GIVEN.len())];
        format!("{s}{g}")
    }

    fn terminal(&mut self, node: u32, role: Role, kind: TerminalKind, name: String) {
        self.next_terminal += 1;
        self.file.terminals.push(TerminalEntry {
            id: self.next_terminal,
            name,
            role,
            kind,
            node,
        });
        self.summary.terminals += 1;
    }

    fn console(&mut self, node: u32, name: String) {
        self.terminal(node, Role::Dispatcher, TerminalKind::Console, name);
        self.summary.consoles += 1;
    }

    fn member(&mut self, unit: u32, role: Role) {
        let kind = match role {
            Role::Police | Role::AuxiliaryPolice => TerminalKind::Handheld,
            Role::SecurityGuard => match self.rng.gen_range(0..100) {
                0..50 => TerminalKind::Handheld,
                50..95 => TerminalKind::PhoneApp,
                _ => TerminalKind::ScreenTerminal,
            },
            _ => TerminalKind::PhoneApp,
        };
        let name = self.person();
        self.terminal(unit, role, kind, name);
    }

    /// A unit: 2 guards and 1 staff member or volunteer, then sometimes a
    /// third and fourth guard and a police lead, 3-5 members in all.
    fn unit(&mut self, station: u32, n: usize) {
        let unit = self.node(Some(station), NodeKind::Unit, format!("共治单元{n}"));
        self.summary.units += 1;
        self.member(unit, Role::SecurityGuard);
        self.member(unit, Role::SecurityGuard);
        let other = if self.rng.gen_bool(0.6) {
            Role::Staff
        } else {
            Role::Volunteer
        };
        self.member(unit, other);
        let mut size = 3;
        if self.rng.gen_bool(0.31) {
            let role = if self.rng.gen_bool(0.5) {
                Role::Police
            } else {
                Role::AuxiliaryPolice
            };
            self.member(unit, role);
            size += 1;
        }
        for p in [0.8, 0.35] {
            if size < 5 && self.rng.gen_bool(p) {
                self.member(unit, Role::SecurityGuard);
                size += 1;
            }
        }
    }
}

/// Generates a city of `params.units` units.
pub fn generate(params: &CityParams) -> City {
    let mut b = Builder {
        rng: StdRng::seed_from_u64(params.seed),
        file: File::default(),
        next_node: 0,
        next_terminal: 100_000,
        summary: Summary::default(),
    };
    let units = params.units.max(1);
    let city = b.node(None, NodeKind::City, params.name.clone());
    b.console(city, format!("{}公安局指挥中心", params.name));
    // Roughly 30 units per police station (15 stations of about 2 units),
    // police stations spread over up to nine districts (~900 units each).
    let police_stations = units.div_ceil(30).max(1);
    let districts = units
        .div_ceil(900)
        .clamp(1, DISTRICTS.len())
        .min(police_stations);
    let district_ids: Vec<u32> = (0..districts)
        .map(|d| {
            let id = b.node(Some(city), NodeKind::District, DISTRICTS[d].to_owned());
            b.console(id, format!("{}指挥中心", DISTRICTS[d]));
            id
        })
        .collect();
    b.summary.districts = districts;
    let mut left = units;
    for p in 0..police_stations {
        let district = district_ids[p % districts];
        let precinct = PRECINCTS[p % PRECINCTS.len()];
        let name = match p / PRECINCTS.len() {
            0 => format!("{precinct}派出所"),
            k => format!("{precinct}{}派出所", k + 1),
        };
        let ps = b.node(Some(district), NodeKind::PoliceStation, name.clone());
        b.console(ps, format!("{name}综合指挥室"));
        b.summary.police_stations += 1;
        // This police station's share of the remaining units.
        let share = left.div_ceil(police_stations - p);
        left -= share;
        let mut placed = 0;
        let mut s = 0;
        while placed < share {
            let n = b.rng.gen_range(1..=3).min(share - placed);
            let street = STREETS[b.rng.gen_range(0..STREETS.len())];
            let site = SITES[s % SITES.len()];
            s += 1;
            let station = b.node(Some(ps), NodeKind::Station, format!("{street}{site}共治站"));
            b.summary.stations += 1;
            for u in 1..=n {
                b.unit(station, u);
            }
            placed += n;
        }
    }
    City {
        file: b.file,
        summary: b.summary,
    }
}

impl City {
    /// The org file as TOML, with `key_file` naming the provisioning key.
    pub fn to_toml(&self, key_file_name: &str) -> anyhow::Result<String> {
        let mut file = self.file.clone();
        file.auth = Some(AuthSection {
            key_file: key_file_name.into(),
        });
        Ok(toml::to_string(&file)?)
    }
}

/// Generates a city and writes its org file to `out` and a fresh
/// provisioning key next to it (`out` with extension `.key`).
pub fn write(params: &CityParams, out: &Path) -> anyhow::Result<Summary> {
    let city = generate(params);
    let key_path = out.with_extension("key");
    let key_name = key_path
        .file_name()
        .context("the output path has no file name")?
        .to_string_lossy()
        .into_owned();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ProvisioningKey::generate().save(&key_path)?;
    std::fs::write(out, city.to_toml(&key_name)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(city.summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_org::Org;

    fn params(units: usize, seed: u64) -> CityParams {
        CityParams {
            units,
            seed,
            name: "金华市".into(),
        }
    }

    #[test]
    fn a_jinhua_sized_city_has_field_shape() {
        let city = generate(&params(7019, 1));
        let s = city.summary;
        assert_eq!(s.units, 7019);
        assert!(
            (27_000..33_000).contains(&(s.terminals - s.consoles)),
            "{s:?}"
        );
        assert_eq!(s.districts, 8);
        assert_eq!(s.consoles, 1 + s.districts + s.police_stations);
        assert!(s.stations * 3 >= s.units && s.stations <= s.units, "{s:?}");
        // Every unit has 3-5 members with at least two guards and a staff
        // member or volunteer.
        let mut by_unit: std::collections::HashMap<u32, Vec<Role>> = Default::default();
        for t in &city.file.terminals {
            by_unit.entry(t.node).or_default().push(t.role);
        }
        for n in city.file.nodes.iter().filter(|n| n.kind == NodeKind::Unit) {
            let roles = &by_unit[&n.id];
            assert!(
                (3..=5).contains(&roles.len()),
                "unit {} has {}",
                n.id,
                roles.len()
            );
            assert!(roles.iter().filter(|r| **r == Role::SecurityGuard).count() >= 2);
            assert!(roles
                .iter()
                .any(|r| matches!(r, Role::Staff | Role::Volunteer)));
        }
    }

    #[test]
    fn round_trips_through_the_gateway_org_loader() {
        let city = generate(&params(200, 3));
        let text = city.to_toml("city.key").unwrap();
        let org = Org::from_toml(&text, Path::new("/tmp")).unwrap();
        assert_eq!(org.terminals().count(), city.summary.terminals);
        assert_eq!(org.key_file(), Some(Path::new("/tmp/city.key")));
        assert!(text.contains("金华市"));
    }

    #[test]
    fn small_cities_and_determinism() {
        let one = generate(&params(1, 9));
        assert_eq!(
            (
                one.summary.units,
                one.summary.police_stations,
                one.summary.districts
            ),
            (1, 1, 1)
        );
        let a = generate(&params(300, 5)).to_toml("k").unwrap();
        assert_eq!(a, generate(&params(300, 5)).to_toml("k").unwrap());
        assert_ne!(a, generate(&params(300, 6)).to_toml("k").unwrap());
    }
}
