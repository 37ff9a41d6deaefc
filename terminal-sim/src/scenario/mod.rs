//! The scenario runner behind `terminal-sim run`: connects the terminals a
//! scenario needs, drives talkers, listens everywhere, and reports.
//!
//! [`run`] goes through its phases in order, one file each: what to do
//! ([`spec`], [`plan`]); connecting everyone (`ramp`); one [`actor`] and one
//! [`listen`]er per terminal at work (`crew`); the director of the measured
//! phase (`talk` for voice, `alerts`, `storm` for the reconnect storm,
//! [`life`] for the living city); and the counters around it turned into the report (`tally`).

pub mod actor;
mod alerts;
pub mod churn;
mod crew;
pub mod life;
pub mod listen;
pub mod plan;
mod ramp;
pub mod spec;
mod storm;
mod talk;
mod tally;
pub mod walk;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use ptt_codec::audio::{Encoder, EncoderConfig};
use ptt_codec::TerminalId;
use ptt_org::{NodeKind, Org};
use tokio::sync::mpsc;

use crate::report::Report;
use crate::terminal;
use crew::Crew;
pub use plan::Plan;
use ramp::Fleet;
pub use spec::{AlertKindSpec, AlertTarget, Pattern, Response, Senders, Spec};
pub use talk::talks;
use tally::{Meter, Tally};

/// Everything `terminal-sim run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The gateway's UDP address, or those of a cluster's nodes: each
    /// terminal starts on the first of its own order
    /// ([`terminal::Gateways::order_for`]) and fails over to the next.
    pub gateways: terminal::Gateways,
    /// TLS server name to verify (the self-signed certificate has
    /// `localhost`).
    pub server_name: String,
    /// PEM certificate to trust.
    pub ca: PathBuf,
    /// The org file (and, through its key_file, the provisioning key).
    pub org: PathBuf,
    /// What to do.
    pub spec: Spec,
    /// Measured phase length.
    pub duration: Duration,
    /// Unit groups to exercise.
    pub groups: usize,
    /// Gateway process to measure.
    pub gateway_pid: Option<u32>,
    /// A WAV file to talk instead of the synthetic speech.
    pub audio: Option<PathBuf>,
    /// Write what one listener per group heard, decoded, as WAV files here.
    pub record_dir: Option<PathBuf>,
    /// Write PNG plots of the run here.
    pub plots: Option<PathBuf>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Added to every round trip of every simulated terminal (see
    /// [`crate::wan`]). Zero: loopback as it is.
    pub delay: Duration,
    /// Threads the terminals run on ([`crate::shards`]), the calling one
    /// included.
    pub threads: usize,
    /// Each terminal notices a dead gateway node within this long instead
    /// of 30 s ([`terminal::set_idle_timeout`]); `None`: the library's
    /// default.
    pub idle_timeout: Option<Duration>,
    /// The voice form terminals offer: SRTP (verified, else DATAGRAM) or
    /// DATAGRAM only.
    pub media: MediaChoice,
    /// Voice frames each listener loses on its downlink, percent, drawn
    /// per terminal from the seed ([`crate::wan::Loss`]). Zero: none.
    pub loss_percent: f64,
    /// Talkers encode with Opus in-band FEC (planned for `loss_percent`,
    /// or the encoder's default 10 % without loss) and recorders recover
    /// lost frames from it; off: no FEC, every lost frame is concealed.
    pub fec: bool,
    /// The talkers' Opus bit rate, bit/s. libopus codes in-band FEC only
    /// when the rate leaves room for it (none at 16 kbit/s and 5-10 %
    /// planned loss; 24 kbit/s does).
    pub bitrate: u32,
}

/// What `terminal-sim run --media` asks the terminals to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaChoice {
    /// SRTP beside QUIC, falling back to DATAGRAMs if the path fails.
    #[default]
    Srtp,
    /// QUIC DATAGRAM voice only.
    Datagram,
}

impl std::fmt::Display for MediaChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MediaChoice::Srtp => "srtp",
            MediaChoice::Datagram => "datagram",
        })
    }
}

impl std::str::FromStr for MediaChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "srtp" => Ok(MediaChoice::Srtp),
            "datagram" => Ok(MediaChoice::Datagram),
            other => Err(format!("--media is srtp or datagram, not {other:?}")),
        }
    }
}

impl RunConfig {
    /// The talkers' encoder settings: FEC as asked, planned for the
    /// simulated loss (rounded up), or for the encoder's default 10 %
    /// when there is none (what a terminal in the field, which does not
    /// know its loss, plans for).
    pub fn encoder(&self) -> EncoderConfig {
        let default = EncoderConfig::default();
        EncoderConfig {
            fec: self.fec,
            expected_loss_percent: if self.loss_percent > 0.0 {
                self.loss_percent.ceil().clamp(1.0, 100.0) as u8
            } else {
                default.expected_loss_percent
            },
            bitrate: self.bitrate,
            ..default
        }
    }

    /// The recorders' playout: FEC recovery as the talkers encode.
    pub fn playout(&self) -> crate::jitter::Config {
        crate::jitter::Config {
            fec: self.fec,
            ..crate::jitter::Config::default()
        }
    }
}

/// What talkers send: the source audio (whole frames, looped) and its
/// Opus packets, one per 20 ms frame.
#[derive(Debug)]
struct Audio {
    source: Arc<Vec<i16>>,
    packets: Arc<Vec<Bytes>>,
}

/// Encodes the audio talkers send (the file, or 10 s of synthetic
/// speech), looped.
fn opus_packets(
    audio: Option<&PathBuf>,
    seed: u64,
    encoder: EncoderConfig,
) -> anyhow::Result<Audio> {
    use ptt_codec::audio::FRAME_SAMPLES;
    let mut pcm: Vec<i16> = match audio {
        Some(path) => crate::wav::read_mono_16k(path)?,
        None => {
            let mut speech = crate::speech::Speech::new(seed);
            let mut pcm = vec![0i16; FRAME_SAMPLES * 500];
            for frame in pcm.chunks_mut(FRAME_SAMPLES) {
                speech.next_frame(frame);
            }
            pcm
        }
    };
    let mut encoder = Encoder::new(encoder)?;
    let packets = pcm
        .chunks_exact(FRAME_SAMPLES)
        .map(|frame| encoder.encode(frame))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !packets.is_empty(),
        "the audio is shorter than one 20 ms frame"
    );
    // What was said: the whole frames sent, looping as the talkers do.
    pcm.truncate(packets.len() * FRAME_SAMPLES);
    Ok(Audio {
        source: Arc::new(pcm),
        packets: Arc::new(packets),
    })
}

/// The target of the runner's log events, whichever of its files logs
/// them: one name for the run's progress in the console and in log
/// filters.
const LOG: &str = module_path!();

/// The actors' command channels, by terminal: one per terminal online
/// after the ramp.
type Commands = HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>;

/// What a director brings back besides the actors' counters.
#[derive(Debug, Default)]
struct Workload {
    /// The gateway's reports of the drills the consoles started.
    drills: Vec<serde_json::Value>,
    /// How the reconnect storm went.
    storm: Option<storm::Storm>,
}

/// Runs a scenario and returns its report: plans it, connects every
/// terminal it needs (the ramp), starts their actors and listeners, runs
/// the workload for the measured phase, then stops everyone and tallies.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let mut plan = Plan::new(&config.org, config.groups)?;
    if config.spec.pattern == Pattern::LivingCity {
        // Consoles are people's in a living city: a simulated one would
        // replace the operator's session.
        plan.drop_consoles();
    }
    let senders = match config.spec.pattern {
        Pattern::Alerts => plan.alert_senders(config.spec.senders == Senders::City),
        _ => Vec::new(),
    };
    let roots = terminal::load_ca(&config.ca)
        .with_context(|| format!("loading CA {}", config.ca.display()))?;
    let audio = opus_packets(config.audio.as_ref(), config.seed, config.encoder())?;

    let fleet = Fleet::open(&config, &plan, &senders, &roots)?;
    let (connected, connections) = fleet.connect(&config, &plan).await;
    // Let presence and join messages settle before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut crew = Crew::start(&config, &plan, &fleet, connected, audio);

    let meter = Meter::start(config.gateway_pid)?;
    let sent_before = fleet.endpoint_stats().sent_packets;
    let workload = workload(&config, &plan, &senders, &mut crew).await;
    let measured = meter.elapsed();
    let uplink_packets = fleet
        .endpoint_stats()
        .sent_packets
        .saturating_sub(sent_before);
    // Let the last frames arrive, then stop everyone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let usage = meter.finish();
    crew.stop();

    let totals = crew.totals(connections).await?;
    let heard = crew.heard().await?;
    let unknown_ssrc = fleet.endpoint_stats().unknown_ssrc;
    fleet.close().await;
    let tally = Tally {
        totals,
        heard,
        measured,
        usage,
        workload,
        uplink_packets,
        unknown_ssrc,
    };
    Ok(tally.report(&config, &plan, &crew.shared.logs))
}

/// Runs the scenario's director for the measured phase. Call once every
/// actor runs; returns when the phase is over (alerts: and drained).
async fn workload(
    config: &RunConfig,
    plan: &Plan,
    senders: &[(TerminalId, u32)],
    crew: &mut Crew,
) -> Workload {
    match config.spec.pattern {
        Pattern::ReconnectStorm => Workload {
            storm: Some(storm::direct(config, &crew.commands, &crew.shared).await),
            ..Workload::default()
        },
        Pattern::Alerts => Workload {
            drills: alerts::direct(config, plan, senders, &crew.commands, &crew.shared).await,
            ..Workload::default()
        },
        Pattern::LivingCity => {
            life::direct(config, plan, &crew.commands, &mut crew.done).await;
            Workload::default()
        }
        _ => {
            talk::direct(config, plan, &crew.commands, &mut crew.done).await;
            Workload::default()
        }
    }
}

/// Where a unit is: its site in the simulated city, placed near its police
/// station.
fn unit_site(org: &Org, unit: u32) -> (i32, i32) {
    let station = org
        .ancestor_of_kind(unit, NodeKind::PoliceStation)
        .unwrap_or(org.root().id);
    walk::unit_site(station, unit)
}
