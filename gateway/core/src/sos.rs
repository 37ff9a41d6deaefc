//! The SOS policy: who an SOS reaches and what its alert says. The
//! gateway's SOS operation stores the alert, takes the unit's floor for the
//! hot mic and delivers it.

use ptt_codec::{AlertBody, AlertKind, GroupId, Location, TerminalId};
use ptt_org::{NodeKind, Org};

/// An SOS alert is deliverable for an hour by default: long enough for a
/// terminal that lost coverage during the emergency to get it on
/// reconnect, short enough that a stale one is not shown the next shift.
pub const DEFAULT_TTL_S: u32 = 3600;

/// SOS alerts have the highest alert priority (3) by default.
pub const DEFAULT_PRIORITY: u8 = 3;

/// The SOS settings (`[sos]` in the gateway's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How long the alert stays deliverable, seconds. Default
    /// [`DEFAULT_TTL_S`].
    pub ttl_s: u32,
    /// The alert's priority. Default [`DEFAULT_PRIORITY`].
    pub priority: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ttl_s: DEFAULT_TTL_S,
            priority: DEFAULT_PRIORITY,
        }
    }
}

/// An SOS to raise: where its hot mic goes, who is alerted, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    /// The terminal's unit, whose floor it takes.
    pub unit: GroupId,
    /// Everyone alerted, sorted: the unit's other terminals and the
    /// consoles of its police station.
    pub recipients: Vec<TerminalId>,
    /// The alert.
    pub body: AlertBody,
}

/// An SOS raised and not yet cancelled: one per terminal, kept in the store
/// so that it survives a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// Its alert.
    pub alert: u64,
    /// The unit group whose floor it took for the hot mic.
    pub group: GroupId,
    /// Who was alerted, to be told of a cancel.
    pub recipients: Vec<TerminalId>,
    /// When its alert expires (Unix ms); pressing SOS again before then
    /// refreshes this one instead of raising another.
    pub expires_ms: u64,
}

impl Active {
    /// Whether pressing SOS again at `now_ms` refreshes this SOS (its alert
    /// is still deliverable) rather than raising a new one.
    pub fn refreshes_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

impl Raised {
    /// When the alert created at `created_ms` (Unix ms) expires.
    pub fn expires_ms(&self, created_ms: u64) -> u64 {
        created_ms.saturating_add(u64::from(self.body.ttl_s) * 1000)
    }
}

/// The SOS of `terminal`, last seen at `location`, under `config`; `None`
/// for a terminal not in the org.
pub fn raise(
    org: &Org,
    config: &Config,
    terminal: TerminalId,
    location: Option<Location>,
) -> Option<Raised> {
    let t = org.terminal(terminal)?;
    let unit = t.node;
    let station = org.ancestor_of_kind(unit, NodeKind::PoliceStation);
    let mut recipients: Vec<TerminalId> = org
        .terminals()
        .filter(|r| r.id != terminal)
        .filter(|r| r.node == unit || (r.is_console() && Some(r.node) == station))
        .map(|r| r.id)
        .collect();
    recipients.sort_unstable();
    let unit_name = org.node(GroupId(unit)).map_or("", |n| n.name.as_str());
    let body = AlertBody {
        kind: AlertKind::Sos,
        priority: config.priority,
        ttl_s: config.ttl_s,
        title: format!("SOS 紧急求助: {}", t.name),
        text: unit_name.to_owned(),
        location,
        attachments: Vec::new(),
    };
    Some(Raised {
        unit: GroupId(unit),
        recipients,
        body,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TREE: &str = r#"
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
        id = 3
        parent = 2
        kind = "police_station"
        name = "城东派出所"
        [[node]]
        id = 4
        parent = 3
        kind = "station"
        name = "站"
        [[node]]
        id = 5
        parent = 4
        kind = "unit"
        name = "共治单元1"
        [[node]]
        id = 6
        parent = 4
        kind = "unit"
        name = "共治单元2"
        [[terminal]]
        id = 100
        node = 1
        role = "dispatcher"
        kind = "console"
        name = "city console"
        [[terminal]]
        id = 300
        node = 3
        role = "dispatcher"
        kind = "console"
        name = "station console"
        [[terminal]]
        id = 301
        node = 3
        role = "police"
        kind = "handheld"
        name = "officer"
        [[terminal]]
        id = 502
        node = 5
        role = "volunteer"
        kind = "phone_app"
        name = "volunteer"
        [[terminal]]
        id = 501
        node = 5
        role = "security_guard"
        kind = "handheld"
        name = "张伟"
        [[terminal]]
        id = 601
        node = 6
        role = "security_guard"
        kind = "handheld"
        name = "other unit"
    "#;

    fn org() -> Org {
        Org::from_toml(TREE, Path::new(".")).expect("the test tree is valid")
    }

    #[test]
    fn an_sos_reaches_the_unit_and_the_station_consoles() {
        let at = Location {
            lat_e7: 291_000_000,
            lon_e7: 1_196_000_000,
            address: String::new(),
        };
        let raised = raise(
            &org(),
            &Config::default(),
            TerminalId(501),
            Some(at.clone()),
        )
        .expect("a terminal of the org");
        assert_eq!(raised.unit, GroupId(5));
        // Not itself, not the other unit, not the city console, not the
        // station's handhelds.
        assert_eq!(raised.recipients, [TerminalId(300), TerminalId(502)]);
        assert_eq!(raised.body.kind, AlertKind::Sos);
        assert_eq!(raised.body.priority, 3);
        assert_eq!(raised.body.ttl_s, 3600);
        assert_eq!(raised.body.title, "SOS 紧急求助: 张伟");
        assert_eq!(raised.body.text, "共治单元1");
        assert_eq!(raised.body.location, Some(at));
        assert!(raised.body.attachments.is_empty());
        assert_eq!(raised.expires_ms(1_000), 1_000 + 3_600_000);
    }

    #[test]
    fn the_config_sets_ttl_and_priority() {
        let config = Config {
            ttl_s: 60,
            priority: 2,
        };
        let raised = raise(&org(), &config, TerminalId(501), None).expect("in the org");
        assert_eq!((raised.body.ttl_s, raised.body.priority), (60, 2));
        assert_eq!(raised.body.location, None);
        assert_eq!(raised.expires_ms(0), 60_000);
    }

    #[test]
    fn pressing_again_refreshes_until_the_alert_expires() {
        let active = Active {
            alert: 7,
            group: GroupId(5),
            recipients: vec![TerminalId(300)],
            expires_ms: 10_000,
        };
        assert!(active.refreshes_at(9_999));
        assert!(!active.refreshes_at(10_000));
    }

    #[test]
    fn a_terminal_outside_the_org_raises_nothing() {
        assert_eq!(raise(&org(), &Config::default(), TerminalId(9), None), None);
    }
}
