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
    /// Every terminal connects, then all drop their connections at the same
    /// instant (`gap_ms` after the ramp) and reconnect at once, as after a
    /// gateway restart or a cell outage; the run measures how long until
    /// every one is back with its groups joined.
    ReconnectStorm,
    /// A city evening for a console to watch, until interrupted (or for
    /// `--duration`, 0 meaning until SIGINT/SIGTERM): members walk patrol
    /// loops and report positions, `talkers` of them at a time talk bursts
    /// in their unit groups, members answer the alerts they get (read,
    /// accept or reject, arrive), now and then one sends a work report or
    /// a clue to its station, and, if asked, one raises an SOS it cancels
    /// itself after a while. Consoles are left to people.
    LivingCity,
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

/// What each alert of an `alerts` scenario targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertTarget {
    /// The sender's whole subtree (its police station, or the city).
    #[default]
    Subtree,
    /// The `nearest_k` members nearest to an incident placed at random near
    /// one of the sender's units, within `nearest_radius_m` (就近处置).
    /// Members walk and report their positions.
    Nearest,
}

/// What the alerts of an `alerts` scenario are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKindSpec {
    /// Dispatch tasks (派单).
    #[default]
    Dispatch,
    /// Drills (拉动演练): answered like dispatches; each sender asks the
    /// gateway for the drill report at the end of the run.
    Drill,
}

/// How simulated responders' delays are drawn from `respond_ms` and
/// `arrive_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Uniform in 0..the value.
    #[default]
    Uniform,
    /// Exponential with the value as its mean (many quick, a few slow),
    /// cut at four times the mean.
    Exponential,
    /// Log-normal with the value as its median and this spread (sigma of
    /// the logarithm; 0.5 is a typical human reaction spread), cut at four
    /// times the median.
    LogNormal {
        /// Sigma of the logarithm.
        sigma: f64,
    },
}

impl Response {
    /// Longest delay this draws for `value` ms.
    pub fn max_ms(self, value: u64) -> u64 {
        match self {
            Response::Uniform => value,
            Response::Exponential | Response::LogNormal { .. } => value.saturating_mul(4),
        }
    }

    /// One delay for `value` ms.
    pub fn draw(self, value: u64, rng: &mut impl rand::Rng) -> std::time::Duration {
        use rand_distr::Distribution;
        let v = value as f64;
        let ms = match self {
            Response::Uniform => rng.gen_range(0.0..=v),
            Response::Exponential => match rand_distr::Exp::new(1.0 / v.max(1.0)) {
                Ok(d) => d.sample(rng),
                Err(_) => v,
            },
            Response::LogNormal { sigma } => {
                match rand_distr::LogNormal::new(v.max(1.0).ln(), sigma) {
                    Ok(d) => d.sample(rng),
                    Err(_) => v,
                }
            }
        };
        std::time::Duration::from_millis(ms.clamp(0.0, self.max_ms(value) as f64) as u64)
    }
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
    /// Share of the exercised unit groups that talk (steady): the others
    /// are connected and listen but carry no voice. Default 1.
    #[serde(default = "default_talk_share")]
    pub talk_share: f64,
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
    /// Delay before accepting or rejecting, ms (alerts): the longest, the
    /// mean or the median, per `response`.
    #[serde(default = "default_respond")]
    pub respond_ms: u64,
    /// Further delay until arriving, ms (alerts), as `respond_ms`.
    #[serde(default = "default_arrive")]
    pub arrive_ms: u64,
    /// How response delays are drawn (alerts): `"uniform"` (default),
    /// `"exponential"`, or `{ log-normal = { sigma = 0.5 } }`.
    #[serde(default)]
    pub response: Response,
    /// What the alerts are (alerts): `dispatch` (default) or `drill`.
    #[serde(default)]
    pub alert_kind: AlertKindSpec,
    /// What each alert targets (alerts).
    #[serde(default)]
    pub alert_target: AlertTarget,
    /// Alerts each sender fires per round (alerts).
    #[serde(default = "default_alerts_per_round")]
    pub alerts_per_round: usize,
    /// Time-to-live of each alert, seconds (alerts).
    #[serde(default = "default_ttl")]
    pub ttl_s: u32,
    /// How many members a nearest target picks (1..100).
    #[serde(default = "default_nearest_k")]
    pub nearest_k: u16,
    /// Search radius of a nearest target, metres (1..50,000).
    #[serde(default = "default_nearest_radius")]
    pub nearest_radius_m: u32,
    /// Members report their position every this many ms while they walk
    /// (0: no positions). A nearest target needs them.
    #[serde(default)]
    pub position_ms: u64,
    /// Fastest walking speed, metres per second (each member walks at a
    /// steady speed drawn from a fifth of this up to this).
    #[serde(default = "default_speed")]
    pub speed_mps: f64,
    /// Members stay within this many metres (east and north) of their
    /// unit's site.
    #[serde(default = "default_walk_radius")]
    pub walk_radius_m: f64,
    /// Share of the recipients (consoles excepted) that drop offline each
    /// round (alerts), closing their connection and reconnecting later.
    #[serde(default)]
    pub offline_ratio: f64,
    /// Longest time offline, ms (uniform in a tenth of this up to this);
    /// must be shorter than the alerts' time-to-live so the gateway still
    /// holds what they missed.
    #[serde(default)]
    pub offline_ms: u64,
    /// Longest wait after the last round for every expected delivery, ms
    /// (alerts); offline terminals come back and get theirs meanwhile.
    #[serde(default = "default_drain")]
    pub drain_ms: u64,
    /// Talkers at a time, city-wide (living-city): each talks one burst of
    /// `burst_ms` / 4 up to `burst_ms` in its unit group, then the next one
    /// starts after a pause drawn around `gap_ms` (exponential, that mean).
    #[serde(default = "default_talkers")]
    pub talkers: usize,
    /// Median delay before a recipient marks an alert read, ms, drawn per
    /// `response` (0: no read receipts; accepting comes `respond_ms` after
    /// reading then).
    #[serde(default)]
    pub read_ms: u64,
    /// Mean time between work reports or clues city-wide, ms (living-city;
    /// 0: none). Each goes from a random member to its station's consoles.
    #[serde(default)]
    pub report_every_ms: u64,
    /// Mean time between SOS city-wide, ms (living-city; 0: none).
    #[serde(default)]
    pub sos_every_ms: u64,
    /// A raiser cancels its own SOS this long after raising it, ms, unless a
    /// console cancelled it first.
    #[serde(default = "default_sos_cancel")]
    pub sos_cancel_ms: u64,
    /// Each member reports every `position_ms` times a factor drawn once
    /// from 1 - this up to 1 + this (0..1), so reports spread out.
    #[serde(default)]
    pub position_spread: f64,
    /// Members walk a patrol loop around their unit's site instead of a
    /// random walk.
    #[serde(default)]
    pub patrol: bool,
}

fn default_talkers() -> usize {
    3
}

fn default_sos_cancel() -> u64 {
    90_000
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

fn default_alerts_per_round() -> usize {
    1
}

fn default_ttl() -> u32 {
    600
}

fn default_nearest_k() -> u16 {
    5
}

fn default_nearest_radius() -> u32 {
    2000
}

fn default_speed() -> f64 {
    2.0
}

fn default_walk_radius() -> f64 {
    300.0
}

fn default_talk_share() -> f64 {
    1.0
}

fn default_drain() -> u64 {
    60_000
}

impl Spec {
    /// The fields every scenario shares unless it says otherwise: what a
    /// TOML file gets for fields it leaves out.
    fn defaults() -> Spec {
        Spec {
            name: String::new(),
            description: String::new(),
            pattern: Pattern::Alerts,
            burst_ms: 0,
            gap_ms: 5000,
            presses_per_round: default_presses(),
            talk_share: default_talk_share(),
            emergency_ratio: 0.0,
            console_ratio: 0.0,
            senders: Senders::Stations,
            accept_ratio: default_accept(),
            respond_ms: default_respond(),
            arrive_ms: default_arrive(),
            response: Response::Uniform,
            alert_kind: AlertKindSpec::Dispatch,
            alert_target: AlertTarget::Subtree,
            alerts_per_round: default_alerts_per_round(),
            ttl_s: default_ttl(),
            nearest_k: default_nearest_k(),
            nearest_radius_m: default_nearest_radius(),
            position_ms: 0,
            speed_mps: default_speed(),
            walk_radius_m: default_walk_radius(),
            offline_ratio: 0.0,
            offline_ms: 0,
            drain_ms: default_drain(),
            talkers: default_talkers(),
            read_ms: 0,
            report_every_ms: 0,
            sos_every_ms: 0,
            sos_cancel_ms: default_sos_cancel(),
            position_spread: 0.0,
            patrol: false,
        }
    }

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
            ..Spec::defaults()
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
            ..Spec::defaults()
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
            ..Spec::defaults()
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

    /// `alert-nearest`: members walk (up to 2 m/s, within 300 m of their
    /// unit's site) and report their position every 2 s; every 4 s each
    /// police station console dispatches an incident placed at random near
    /// one of its units to the 5 nearest members within 2 km.
    pub fn alert_nearest() -> Spec {
        Spec {
            name: "alert-nearest".into(),
            description: "members walk and report positions; station consoles dispatch incidents \
                          near their units to the nearest members (就近处置)"
                .into(),
            gap_ms: 4000,
            alert_target: AlertTarget::Nearest,
            nearest_k: 5,
            nearest_radius_m: 2000,
            position_ms: 2000,
            ..Spec::alert_subtree()
        }
    }

    /// `alert-storm`: every 2 s each police station console fires 5 alerts
    /// (time-to-live 60 s) to its subtree, while each round 10% of the
    /// recipients drop offline for up to 10 s and come back for the alerts
    /// they missed.
    pub fn alert_storm() -> Spec {
        Spec {
            name: "alert-storm".into(),
            description: "consoles fire several alerts per round to their subtrees while a share \
                          of the recipients drop offline and reconnect"
                .into(),
            gap_ms: 2000,
            alerts_per_round: 5,
            ttl_s: 60,
            offline_ratio: 0.1,
            offline_ms: 10_000,
            ..Spec::alert_subtree()
        }
    }

    /// `drill`: each police station console of the exercised units starts
    /// one drill (拉动演练) on its police station's subtree; responders
    /// accept after a log-normal delay (median 8 s) and arrive after a
    /// further one (median 20 s), 10% never answer; at the end each console
    /// asks the gateway for the drill report, which the run prints.
    pub fn drill() -> Spec {
        Spec {
            name: "drill".into(),
            description: "police station consoles start a drill on their subtree; responders \
                          accept and arrive after log-normal delays; the gateway's drill report \
                          is printed"
                .into(),
            alert_kind: AlertKindSpec::Drill,
            // One drill per console in a run.
            gap_ms: 24 * 3600 * 1000,
            ttl_s: 1800,
            accept_ratio: 0.9,
            respond_ms: 8000,
            arrive_ms: 20_000,
            response: Response::LogNormal { sigma: 0.6 },
            ..Spec::alert_subtree()
        }
    }

    /// `city-voice-peak`: the whole city connected (run with `--groups
    /// 7019`), 5% of the units talking at once as in voice-steady, every
    /// member and station console listening.
    pub fn city_voice_peak() -> Spec {
        Spec {
            name: "city-voice-peak".into(),
            description: "the whole city connected; 5% of the units talk at once (5 s bursts) \
                          while all members and their station consoles listen"
                .into(),
            talk_share: 0.05,
            ..Spec::voice_steady()
        }
    }

    /// `reconnect-storm`: the exercised terminals connect, idle for 2 s, then
    /// all drop their connections at once and reconnect immediately (with
    /// backoff only after a failed attempt); run with every unit
    /// (`--groups 7019`) for a city.
    pub fn reconnect_storm() -> Spec {
        Spec {
            name: "reconnect-storm".into(),
            description: "every terminal drops its connection at the same instant and reconnects \
                          at once, as after a gateway restart or a cell outage"
                .into(),
            pattern: Pattern::ReconnectStorm,
            gap_ms: 2000,
            drain_ms: 300_000,
            ..Spec::defaults()
        }
    }

    /// `living-city`: an evening in the city for the console demo, run
    /// until interrupted (`--duration 0`): members on patrol loops within
    /// 250 m of their unit's site report positions every 10-30 s; three
    /// talkers at a time city-wide talk 2-8 s bursts with pauses of about
    /// 6 s between them; recipients read an alert after a few seconds
    /// (median 4 s), accept (85 %) or reject with a reason after about 15 s
    /// more, and arrive about a minute later; a work report or clue goes to
    /// a station every 45 s or so. No SOS unless `sos_every_ms` is set.
    pub fn living_city() -> Spec {
        Spec {
            name: "living-city".into(),
            description: "members patrol and report positions, a few talk in their unit groups, \
                          answer alerts, send reports and clues; runs until interrupted"
                .into(),
            pattern: Pattern::LivingCity,
            burst_ms: 8000,
            gap_ms: 6000,
            talkers: 3,
            position_ms: 20_000,
            position_spread: 0.5,
            speed_mps: 1.5,
            walk_radius_m: 250.0,
            patrol: true,
            accept_ratio: 0.85,
            read_ms: 4000,
            respond_ms: 15_000,
            arrive_ms: 60_000,
            response: Response::LogNormal { sigma: 0.5 },
            report_every_ms: 45_000,
            sos_every_ms: 0,
            ttl_s: 600,
            ..Spec::defaults()
        }
    }

    /// Checks what serde cannot: ratios, ranges, and that an offline
    /// terminal can still get what it missed.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, r) in [
            ("emergency_ratio", self.emergency_ratio),
            ("console_ratio", self.console_ratio),
            ("accept_ratio", self.accept_ratio),
            ("offline_ratio", self.offline_ratio),
            ("talk_share", self.talk_share),
            ("position_spread", self.position_spread),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&r),
                "{name} must be within 0..1, not {r}"
            );
        }
        if self.pattern == Pattern::LivingCity {
            anyhow::ensure!(
                self.talkers == 0 || self.burst_ms >= 400,
                "burst_ms must be at least 400 when members talk"
            );
            anyhow::ensure!(
                self.position_ms > 0 && self.speed_mps >= 0.0 && self.walk_radius_m > 0.0,
                "a living city needs position_ms above 0, speed_mps at least 0 and walk_radius_m above 0"
            );
            anyhow::ensure!(self.ttl_s > 0, "ttl_s must be above 0");
            anyhow::ensure!(
                self.sos_every_ms == 0 || self.sos_cancel_ms > 0,
                "sos_cancel_ms must be above 0 when members raise SOS"
            );
            return Ok(());
        }
        if self.pattern != Pattern::Alerts {
            return Ok(());
        }
        anyhow::ensure!(self.ttl_s > 0, "ttl_s must be above 0");
        if let Response::LogNormal { sigma } = self.response {
            anyhow::ensure!(
                sigma > 0.0 && sigma < 3.0,
                "response log-normal sigma must be within 0..3, not {sigma}"
            );
        }
        anyhow::ensure!(
            self.alerts_per_round >= 1,
            "alerts_per_round must be at least 1"
        );
        if self.alert_target == AlertTarget::Nearest {
            anyhow::ensure!(
                (1..=ptt_codec::alert::MAX_NEAREST).contains(&self.nearest_k),
                "nearest_k must be within 1..{}",
                ptt_codec::alert::MAX_NEAREST
            );
            anyhow::ensure!(
                (1..=ptt_codec::alert::MAX_RADIUS_M).contains(&self.nearest_radius_m),
                "nearest_radius_m must be within 1..{}",
                ptt_codec::alert::MAX_RADIUS_M
            );
            anyhow::ensure!(
                self.position_ms > 0,
                "a nearest target needs position_ms above 0: the gateway picks members by their reported positions"
            );
        }
        if self.position_ms > 0 {
            anyhow::ensure!(
                self.speed_mps >= 0.0 && self.walk_radius_m > 0.0,
                "speed_mps must be at least 0 and walk_radius_m above 0"
            );
        }
        if self.offline_ratio > 0.0 {
            anyhow::ensure!(
                self.offline_ms > 0 && self.offline_ms < u64::from(self.ttl_s) * 1000,
                "offline_ms must be above 0 and below the alerts' time-to-live ({} s), \
                 or terminals would miss alerts for good",
                self.ttl_s
            );
        }
        Ok(())
    }

    /// A built-in scenario by name, or a TOML file.
    pub fn resolve(name_or_file: &str) -> anyhow::Result<Spec> {
        let spec = match name_or_file {
            "voice-steady" => Spec::voice_steady(),
            "floor-contention" => Spec::floor_contention(),
            "alert-subtree" => Spec::alert_subtree(),
            "alert-city" => Spec::alert_city(),
            "alert-nearest" => Spec::alert_nearest(),
            "alert-storm" => Spec::alert_storm(),
            "drill" => Spec::drill(),
            "reconnect-storm" => Spec::reconnect_storm(),
            "city-voice-peak" => Spec::city_voice_peak(),
            "living-city" => Spec::living_city(),
            path if Path::new(path).is_file() => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                toml::from_str(&text).with_context(|| format!("parsing scenario file {path}"))?
            }
            other => anyhow::bail!(
                "unknown scenario {other:?}: use voice-steady, floor-contention, alert-subtree, \
                 alert-city, alert-nearest, alert-storm, drill, city-voice-peak, reconnect-storm, \
                 living-city or a TOML file"
            ),
        };
        spec.validate()
            .with_context(|| format!("scenario {name_or_file}"))?;
        Ok(spec)
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

    #[test]
    fn new_alert_scenarios_resolve_by_name_and_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for (name, check) in [
            ("alert-nearest", Spec::alert_nearest as fn() -> Spec),
            ("alert-storm", Spec::alert_storm),
            ("drill", Spec::drill),
            ("city-voice-peak", Spec::city_voice_peak),
            ("reconnect-storm", Spec::reconnect_storm),
            ("living-city", Spec::living_city),
        ] {
            let built_in = Spec::resolve(name).unwrap();
            let file = dir.join(format!("{name}.toml"));
            let from_file = Spec::resolve(file.to_str().unwrap()).unwrap();
            let expected = check();
            for s in [&built_in, &from_file] {
                assert_eq!(s.name, expected.name);
                assert_eq!(s.pattern, expected.pattern);
                assert_eq!(s.talk_share, expected.talk_share);
                assert_eq!(s.drain_ms, expected.drain_ms);
                assert_eq!(s.alert_target, expected.alert_target);
                assert_eq!(s.alerts_per_round, expected.alerts_per_round);
                assert_eq!(s.gap_ms, expected.gap_ms);
                assert_eq!(s.ttl_s, expected.ttl_s);
                assert_eq!(s.position_ms, expected.position_ms);
                assert_eq!(s.offline_ratio, expected.offline_ratio);
                assert_eq!(s.offline_ms, expected.offline_ms);
                assert_eq!(s.nearest_k, expected.nearest_k);
                assert_eq!(s.alert_kind, expected.alert_kind);
                assert_eq!(s.response, expected.response);
                assert_eq!(
                    (s.talkers, s.read_ms, s.report_every_ms, s.sos_every_ms),
                    (
                        expected.talkers,
                        expected.read_ms,
                        expected.report_every_ms,
                        expected.sos_every_ms
                    )
                );
                assert_eq!(
                    (s.patrol, s.position_spread, s.burst_ms, s.sos_cancel_ms),
                    (
                        expected.patrol,
                        expected.position_spread,
                        expected.burst_ms,
                        expected.sos_cancel_ms
                    )
                );
                assert_eq!(
                    (s.respond_ms, s.arrive_ms, s.accept_ratio),
                    (
                        expected.respond_ms,
                        expected.arrive_ms,
                        expected.accept_ratio
                    )
                );
            }
        }
        // Older files keep working: the new fields have defaults.
        let old: Spec =
            toml::from_str("name = \"x\"\npattern = \"alerts\"\nburst_ms = 0\ngap_ms = 5000\n")
                .unwrap();
        assert_eq!(old.alert_target, AlertTarget::Subtree);
        assert_eq!(old.alerts_per_round, 1);
        assert_eq!(old.offline_ratio, 0.0);
        old.validate().unwrap();
    }

    #[test]
    fn every_scenario_file_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let spec = Spec::resolve(path.to_str().unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(!spec.description.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 6, "{n} scenario files");
    }

    #[test]
    fn the_demo_scenarios_parse_and_validate() {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
        let city = Spec::resolve(scripts.join("demo-city.toml").to_str().unwrap()).unwrap();
        assert_eq!(city.pattern, Pattern::LivingCity);
        assert!(city.sos_every_ms > 0 && city.sos_cancel_ms > 0);
        let drill = Spec::resolve(scripts.join("demo-drill.toml").to_str().unwrap()).unwrap();
        assert_eq!(drill.alert_kind, AlertKindSpec::Drill);
        let mut bad = Spec::living_city();
        bad.position_ms = 0;
        assert!(bad.validate().is_err(), "a living city without positions");
        let mut bad = Spec::living_city();
        bad.position_spread = 1.0;
        assert!(bad.validate().is_ok(), "spread 1 is within 0..1");
        bad.position_spread = 1.5;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn response_delays_follow_their_distribution_and_are_cut() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draw = |r: Response, rng: &mut rand::rngs::StdRng| {
            let mut v: Vec<u64> = (0..2001)
                .map(|_| r.draw(10_000, rng).as_millis() as u64)
                .collect();
            v.sort_unstable();
            v
        };
        let uniform = draw(Response::Uniform, &mut rng);
        assert!(*uniform.last().unwrap() <= 10_000);
        assert!(
            (4_000..6_000).contains(&uniform[1000]),
            "median {}",
            uniform[1000]
        );
        let lognormal = draw(Response::LogNormal { sigma: 0.6 }, &mut rng);
        assert!(
            (8_500..11_500).contains(&lognormal[1000]),
            "median {}",
            lognormal[1000]
        );
        assert!(*lognormal.last().unwrap() <= 40_000, "cut at 4x");
        let exp = draw(Response::Exponential, &mut rng);
        let mean = exp.iter().sum::<u64>() / exp.len() as u64;
        // The cut at 4x the mean trims the tail a little.
        assert!((8_500..10_500).contains(&mean), "mean {mean}");
        assert_eq!(Response::Uniform.max_ms(10), 10);
        assert_eq!(Response::Exponential.max_ms(10), 40);
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        let mut s = Spec::alert_storm();
        s.offline_ms = u64::from(s.ttl_s) * 1000;
        assert!(s.validate().is_err(), "offline as long as the TTL");
        let mut s = Spec::alert_nearest();
        s.position_ms = 0;
        assert!(s.validate().is_err(), "nearest without positions");
        let mut s = Spec::alert_nearest();
        s.nearest_k = 0;
        assert!(s.validate().is_err());
        let mut s = Spec::alert_storm();
        s.offline_ratio = 1.5;
        assert!(s.validate().is_err());
        Spec::voice_steady().validate().unwrap();
        Spec::alert_city().validate().unwrap();
    }
}
