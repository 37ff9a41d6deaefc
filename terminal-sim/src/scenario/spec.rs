//! What a scenario does, as data: built-in scenarios are values of
//! [`Spec`], and a TOML file with the same fields defines a new one.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The traffic pattern of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// In each group one member at a time talks in back-to-back bursts
    /// (rotating through the members); everyone else listens.
    Steady,
    /// Every round, several members of each group press the talk key at
    /// the same instant, with their roles' priorities; some rounds carry an
    /// emergency request and some a console.
    Contention,
    /// Every round, each sending console pushes a dispatch alert to its
    /// whole subtree; recipients accept or reject and arrive after
    /// simulated delays.
    Alerts,
}

/// Who sends alerts in an `alerts` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Senders {
    /// The police station consoles of the exercised units, each to its
    /// police station's subtree.
    #[default]
    Stations,
    /// The city console, to the whole city.
    City,
}

/// A scenario's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Name shown in reports.
    pub name: String,
    /// One line on what it models.
    #[serde(default)]
    pub description: String,
    /// Traffic pattern.
    pub pattern: Pattern,
    /// How long one talker holds the key, milliseconds (steady), or the
    /// longest hold (contention: holds are uniform in half to all of this).
    pub burst_ms: u64,
    /// Pause between bursts (steady) or between rounds (contention), ms.
    pub gap_ms: u64,
    /// Members pressing at once per round (contention).
    #[serde(default = "default_presses")]
    pub presses_per_round: usize,
    /// Share of rounds in which one press is an emergency (contention).
    #[serde(default)]
    pub emergency_ratio: f64,
    /// Share of rounds in which the station console also presses (contention).
    #[serde(default)]
    pub console_ratio: f64,
    /// Who sends alerts (alerts).
    #[serde(default)]
    pub senders: Senders,
    /// Share of dispatch recipients who accept (alerts).
    #[serde(default = "default_accept")]
    pub accept_ratio: f64,
    /// Longest delay before accepting or rejecting, ms (alerts).
    #[serde(default = "default_respond")]
    pub respond_ms: u64,
    /// Longest further delay until arriving, ms (alerts).
    #[serde(default = "default_arrive")]
    pub arrive_ms: u64,
}

fn default_accept() -> f64 {
    0.8
}

fn default_respond() -> u64 {
    2000
}

fn default_arrive() -> u64 {
    5000
}

fn default_presses() -> usize {
    3
}

impl Spec {
    /// `voice-steady`: the voice load test. Bursts of 5 s, 300 ms apart:
    /// about 94% of the time a group carries voice.
    pub fn voice_steady() -> Spec {
        Spec {
            name: "voice-steady".into(),
            description: "in each unit group one member at a time talks in bursts while all other \
                          members and the station console listen"
                .into(),
            pattern: Pattern::Steady,
            burst_ms: 5000,
            gap_ms: 300,
            presses_per_round: 1,
            emergency_ratio: 0.0,
            console_ratio: 0.0,
            senders: Senders::Stations,
            accept_ratio: default_accept(),
            respond_ms: default_respond(),
            arrive_ms: default_arrive(),
        }
    }

    /// `floor-contention`: three members of each group press at once every
    /// 3 s, holding 1-2 s; one round in ten carries an emergency press and one
    /// in five a press from the station console.
    pub fn floor_contention() -> Spec {
        Spec {
            name: "floor-contention".into(),
            description: "several members of each group press talk at once, mixed roles, \
                          occasional emergency"
                .into(),
            pattern: Pattern::Contention,
            burst_ms: 2000,
            gap_ms: 3000,
            presses_per_round: 3,
            emergency_ratio: 0.1,
            console_ratio: 0.2,
            senders: Senders::Stations,
            accept_ratio: default_accept(),
            respond_ms: default_respond(),
            arrive_ms: default_arrive(),
        }
    }

    /// `alert-subtree`: every police station console of the exercised
    /// units pushes a dispatch to its subtree every 5 s; 80% of recipients
    /// accept within 2 s and arrive within a further 5 s, the rest decline.
    pub fn alert_subtree() -> Spec {
        Spec {
            name: "alert-subtree".into(),
            description: "consoles alert their police station's subtree; members receive, accept, arrive after simulated delays".into(),
            pattern: Pattern::Alerts,
            burst_ms: 0,
            gap_ms: 5000,
            presses_per_round: 0,
            emergency_ratio: 0.0,
            console_ratio: 0.0,
            senders: Senders::Stations,
            accept_ratio: default_accept(),
            respond_ms: default_respond(),
            arrive_ms: default_arrive(),
        }
    }

    /// `alert-city`: the city console pushes one alert to the whole city
    /// (run with every unit: `--groups 7019`).
    pub fn alert_city() -> Spec {
        Spec {
            name: "alert-city".into(),
            description: "the city command centre alerts every terminal in the city at once".into(),
            senders: Senders::City,
            gap_ms: 60_000,
            ..Spec::alert_subtree()
        }
    }

    /// A built-in scenario by name, or a TOML file.
    pub fn resolve(name_or_file: &str) -> anyhow::Result<Spec> {
        match name_or_file {
            "voice-steady" => Ok(Spec::voice_steady()),
            "floor-contention" => Ok(Spec::floor_contention()),
            "alert-subtree" => Ok(Spec::alert_subtree()),
            "alert-city" => Ok(Spec::alert_city()),
            path if Path::new(path).is_file() => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                toml::from_str(&text).with_context(|| format!("parsing scenario file {path}"))
            }
            other => anyhow::bail!(
                "unknown scenario {other:?}: use voice-steady, floor-contention, alert-subtree, alert-city or a TOML file"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_resolve_and_files_parse() {
        assert_eq!(
            Spec::resolve("voice-steady").unwrap().pattern,
            Pattern::Steady
        );
        assert_eq!(
            Spec::resolve("floor-contention").unwrap().pattern,
            Pattern::Contention
        );
        assert!(Spec::resolve("no-such-scenario").is_err());
        let spec: Spec = toml::from_str(
            "name = \"x\"\npattern = \"contention\"\nburst_ms = 100\ngap_ms = 200\n",
        )
        .unwrap();
        assert_eq!(spec.presses_per_round, 3);
        assert!(toml::from_str::<Spec>(
            "name = \"x\"\npattern = \"steady\"\nburst_ms = 1\ngap_ms = 1\nbogus = 1\n"
        )
        .is_err());
    }
}
