//! `terminal-sim`: generate a city, or run a scenario against a gateway.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ptt_terminal_sim::city::{self, CityParams};
use ptt_terminal_sim::scenario::{self, RunConfig, Spec};
use ptt_terminal_sim::terminal::Gateways;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "PTT terminal simulator: city generator and drill/load harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once, at start: the size of the `run` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Write an org file for a generated city (and its provisioning key
    /// next to it, FILE with extension .key).
    GenCity {
        /// Co-governance units (Jinhua has 7,019).
        #[arg(long, default_value_t = 7019)]
        units: usize,
        /// Output org file.
        #[arg(long)]
        out: PathBuf,
        /// Random seed; the same seed gives the same city.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// City name.
        #[arg(long, default_value = "金华市")]
        name: String,
    },
    /// Run a scenario against a gateway and write a JSON report.
    Run {
        /// Gateway address, or the addresses of a cluster's nodes separated
        /// by commas (A,B,C): each terminal starts on the first address of
        /// its own order (rendezvous hashing of its id, so the fleet spreads
        /// evenly) and, when its connection is lost, reconnects to the next
        /// with backoff and jitter (ptt_terminal::Failover's logic).
        #[arg(long)]
        gateway: Gateways,
        /// PEM certificate to trust (the gateway's data-dir/cert.pem).
        #[arg(long)]
        ca: PathBuf,
        /// TLS server name.
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// Org file (the gateway's).
        #[arg(long)]
        org: PathBuf,
        /// voice-steady, floor-contention, alert-subtree, alert-city,
        /// alert-nearest, alert-storm, drill, city-voice-peak,
        /// reconnect-storm, living-city, or a scenario TOML file (see
        /// terminal-sim/scenarios/).
        #[arg(long)]
        scenario: String,
        /// Seconds of measured traffic. living-city: 0 runs until SIGINT
        /// (Ctrl-C) or SIGTERM, which also end it early otherwise.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// JSON report file.
        #[arg(long)]
        report: PathBuf,
        /// Unit groups to exercise.
        #[arg(long, default_value_t = 50)]
        groups: usize,
        /// Gateway process id, to measure its CPU and memory.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// 16-bit PCM WAV to talk (resampled to 16 kHz mono).
        #[arg(long)]
        audio: Option<PathBuf>,
        /// Write what one listener per group heard as WAV files here, and
        /// score it against what was said (the report's `speech` section:
        /// frames recovered by FEC and concealed, envelope correlation,
        /// segmental SNR).
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Write PNG plots (latency CDF, delivery over time) here.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Threads driving the simulated terminals, each owning its share
        /// of the endpoints and their terminals (no work stealing). Default
        /// 1: on a 2-core machine shared with the gateway, one thread
        /// delivered 100 % of the city's peak voice and leaves the other
        /// core to the gateway. On a machine of its own, use one per core.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
        /// Milliseconds added to every round trip of every simulated
        /// terminal (its packets leave late), as on a cellular path; 0 is
        /// loopback as it is. The harness pays for it, not the gateway.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Milliseconds without a packet from its gateway node after which
        /// a terminal gives the connection up and fails over (keep-alives
        /// every third of it; at least 300). Default: 6 s with several
        /// `--gateway` addresses (the library's failover terminals), else
        /// the library's 30 s. A node killed outright is noticed only so.
        #[arg(long)]
        idle_timeout_ms: Option<u64>,
        /// Voice media plane the terminals offer: `srtp` (SRTP beside QUIC
        /// on the gateway's port, used once its path is verified, else
        /// QUIC DATAGRAMs) or `datagram` (QUIC DATAGRAMs only, as a
        /// browser console). The report's `media` section says which form
        /// each terminal ended up in and counts the uplink packets.
        #[arg(long, default_value = "srtp")]
        media: scenario::MediaChoice,
        /// Percent of voice frames each listener loses on its downlink
        /// (0-100; random, independent per frame, seeded by --seed and the
        /// terminal so runs repeat). Applied after the frame is counted as
        /// delivered and before it is played: voice only, never the control
        /// stream. Talkers then plan their Opus FEC for this loss.
        #[arg(long, default_value = "0", value_parser = ptt_terminal_sim::wan::parse_percent)]
        loss: f64,
        /// Opus in-band FEC: talkers encode with it and recorders recover a
        /// lost frame from the next packet; `off` conceals every loss
        /// (packet-loss concealment only), for contrast.
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        fec: String,
        /// The talkers' Opus bit rate, bit/s (6000-128000). libopus codes
        /// FEC only when the rate leaves room for it: none at the default
        /// 16 kbit/s with 5-10 % loss planned (lost frames are then
        /// concealed, and counted so); 24000 does.
        #[arg(long, default_value_t = ptt_codec::audio::DEFAULT_BITRATE,
              value_parser = clap::value_parser!(u32).range(6000..=128_000))]
        bitrate: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ptt_terminal_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::GenCity {
            units,
            out,
            seed,
            name,
        } => {
            let summary = city::write(&CityParams { units, seed, name }, &out)?;
            println!(
                "wrote {}: {} units in {} stations, {} police stations, {} districts; {} terminals ({} consoles)",
                out.display(),
                summary.units,
                summary.stations,
                summary.police_stations,
                summary.districts,
                summary.terminals,
                summary.consoles
            );
            Ok(())
        }
        Command::Run {
            gateway,
            ca,
            server_name,
            org,
            scenario,
            duration,
            report,
            groups,
            gateway_pid,
            audio,
            record_dir,
            plots,
            seed,
            threads,
            delay_ms,
            idle_timeout_ms,
            media,
            loss,
            fec,
            bitrate,
        } => {
            let spec = Spec::resolve(&scenario)?;
            let config = RunConfig {
                gateways: gateway,
                server_name,
                ca,
                org,
                spec,
                duration: Duration::from_secs(duration),
                groups,
                gateway_pid,
                audio,
                record_dir,
                plots,
                seed,
                delay: Duration::from_millis(delay_ms),
                threads: usize::from(threads),
                idle_timeout: idle_timeout_ms.map(Duration::from_millis),
                media,
                loss_percent: loss,
                fec: fec == "on",
                bitrate,
            };
            // The other threads are started by the run (`shards`).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = runtime.block_on(scenario::run(config))?;
            let json = serde_json::to_string_pretty(&result)?;
            std::fs::write(&report, json + "\n")
                .with_context(|| format!("writing {}", report.display()))?;
            print!("{}", result.summary());
            println!("report: {}", report.display());
            Ok(())
        }
    }
}
