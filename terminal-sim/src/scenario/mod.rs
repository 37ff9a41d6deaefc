//! The scenario runner behind `terminal-sim run`: connects the terminals a
//! scenario needs, drives talkers, listens everywhere, and reports.

pub mod actor;
mod alerts;
pub mod churn;
mod crew;
pub mod listen;
pub mod plan;
pub mod spec;
mod storm;
mod talk;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ptt_codec::audio::{Encoder, EncoderConfig};
use ptt_codec::{GroupId, TerminalId};
use ptt_org::{NodeKind, Org};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::report::{
    self, AlertReport, ConnectionReport, FloorReport, GatewayReport, Latency, Report, VoiceReport,
};
use crate::terminal::{self, Terminal};
pub use plan::Plan;
pub use spec::{AlertKindSpec, AlertTarget, Pattern, Response, Senders, Spec};
pub use talk::talks;

/// Everything `terminal-sim run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Gateway UDP address.
    pub gateway: SocketAddr,
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
}

/// Terminals connected at once during the ramp.
const CONNECT_CONCURRENCY: usize = 64;

/// Terminals per client endpoint (UDP socket).
const TERMINALS_PER_ENDPOINT: usize = 256;

/// Encodes the audio talkers send: 10 s of it, looped.
fn opus_packets(audio: Option<&PathBuf>, seed: u64) -> anyhow::Result<Vec<Bytes>> {
    use ptt_codec::audio::FRAME_SAMPLES;
    let pcm: Vec<i16> = match audio {
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
    let mut encoder = Encoder::new(EncoderConfig::default())?;
    let packets = pcm
        .chunks_exact(FRAME_SAMPLES)
        .map(|frame| encoder.encode(frame))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !packets.is_empty(),
        "the audio is shorter than one 20 ms frame"
    );
    Ok(packets)
}

/// Runs a scenario and returns its report.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let mut plan = Plan::new(&config.org, config.groups)?;
    let senders = match config.spec.pattern {
        Pattern::Alerts => plan.alert_senders(config.spec.senders == Senders::City),
        _ => Vec::new(),
    };
    let roots = terminal::load_ca(&config.ca)
        .with_context(|| format!("loading CA {}", config.ca.display()))?;
    let packets = Arc::new(opus_packets(config.audio.as_ref(), config.seed)?);

    // Connect everyone the plan needs and join their groups.
    // Alert senders connect last, so a long ramp cannot age their sessions.
    let mut ids: Vec<TerminalId> = plan.terminals.keys().copied().collect();
    ids.sort_by_key(|t| senders.iter().any(|(s, _)| s == t));
    // Endpoint i, and every task of the terminals on it, runs on shard i.
    let shards = crate::shards::Shards::start(config.threads)?;
    let endpoints = (0..ids.len().div_ceil(TERMINALS_PER_ENDPOINT).max(shards.len()))
        .map(|i| {
            let _on = shards.of(i).enter();
            crate::wan::endpoint(SocketAddr::from(([0, 0, 0, 0], 0)), &roots, config.delay)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Each terminal its own TLS client configuration, as each device has:
    // its session tickets let it resume instead of a full handshake.
    let clients: HashMap<TerminalId, quinn::ClientConfig> = ids
        .iter()
        .map(|t| Ok((*t, terminal::client_config(&roots)?)))
        .collect::<Result<_, terminal::Error>>()?;
    let ramp = Instant::now();
    let mut connecting = JoinSet::new();
    let mut connected: HashMap<TerminalId, Terminal> = HashMap::new();
    let endpoint_of: HashMap<TerminalId, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i % endpoints.len()))
        .collect();
    let mut failed = 0u64;
    let mut next = 0;
    // Drawn on a terminal only (hidden when stderr is a file or a pipe).
    let progress = indicatif::ProgressBar::new(ids.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "connecting {bar:40} {pos}/{len} {per_sec} ({msg} failed) eta {eta}",
        )
        .expect("valid template"),
    );
    progress.set_message("0");
    while next < ids.len() || !connecting.is_empty() {
        while next < ids.len() && connecting.len() < CONNECT_CONCURRENCY {
            let id = ids[next];
            let shard = shards.of(endpoint_of[&id]);
            let endpoint = endpoints[endpoint_of[&id]].clone();
            let credential = plan.credential(id);
            let groups = plan.terminals[&id].clone();
            let (addr, name) = (config.gateway, config.server_name.clone());
            let client = clients[&id].clone();
            connecting.spawn_on(
                async move {
                    let mut t = Terminal::connect_with_config(
                        &endpoint,
                        client,
                        addr,
                        &name,
                        id,
                        &credential,
                        terminal::SeenAlerts::default(),
                    )
                    .await?;
                    for g in groups {
                        t.join(g).await?;
                    }
                    Ok::<_, terminal::Error>(t)
                },
                shard,
            );
            next += 1;
        }
        let joined = connecting.join_next().await;
        progress.inc(u64::from(joined.is_some()));
        match joined {
            Some(Ok(Ok(t))) => {
                connected.insert(t.id(), t);
            }
            Some(Ok(Err(e))) => {
                failed += 1;
                tracing::warn!("terminal failed to connect: {e}");
            }
            Some(Err(e)) => {
                failed += 1;
                tracing::warn!("connect task failed: {e}");
            }
            None => {}
        }
        progress.set_message(failed.to_string());
    }
    progress.finish_and_clear();
    let ramp_s = ramp.elapsed().as_secs_f64();
    let connections = ConnectionReport {
        target: ids.len() as u64,
        established: connected.len() as u64,
        failed,
        handshakes_per_s: connected.len() as f64 / ramp_s.max(1e-9),
        ..ConnectionReport::default()
    };
    tracing::info!(
        online = connected.len(),
        failed,
        "terminals connected in {ramp_s:.1} s"
    );
    // Let presence and join messages settle before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs: Arc<HashMap<GroupId, Arc<listen::SendLog>>> =
        Arc::new(plan.groups.iter().map(|g| (g.id, Arc::default())).collect());
    let online: HashMap<GroupId, u64> = plan
        .groups
        .iter()
        .map(|g| {
            (
                g.id,
                g.listeners
                    .iter()
                    .filter(|t| connected.contains_key(t))
                    .count() as u64,
            )
        })
        .collect();
    let shared = Arc::new(actor::Shared {
        packets,
        logs: logs.clone(),
        online,
        responders: actor::Responders {
            accept_ratio: config.spec.accept_ratio,
            respond_ms: config.spec.respond_ms,
            arrive_ms: config.spec.arrive_ms,
            response: config.spec.response,
        },
        alerts_expected: Default::default(),
        alerts_delivered: Default::default(),
        position_every: (config.spec.position_ms > 0)
            .then(|| Duration::from_millis(config.spec.position_ms)),
        back_after_drop: Default::default(),
    });
    let mut walk_rng = StdRng::seed_from_u64(config.seed ^ 0x5745_4c4b);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<GroupId>();
    let mut actors = JoinSet::new();
    // Delivery over time is counted in seconds from here: every terminal
    // is connected.
    let epoch = Instant::now();
    let mut listeners = JoinSet::new();
    let mut commands: HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>> = HashMap::new();
    let recorders = plan.recorders();
    for (id, t) in connected {
        let groups = plan.terminals[&id].clone();
        let record = match &config.record_dir {
            Some(dir) => recorders
                .iter()
                .filter(|(_, r)| *r == id)
                .map(|(g, _)| (*g, dir.join(format!("group-{}-terminal-{}.wav", g.0, id.0))))
                .collect(),
            None => Vec::new(),
        };
        let (conn_tx, conn_rx) = watch::channel(t.connection().clone());
        let shard = shards.of(endpoint_of[&id]);
        listeners.spawn_on(
            crew::listen_loop(
                conn_rx,
                groups.clone(),
                logs.clone(),
                record,
                stop_rx.clone(),
                epoch,
            ),
            shard,
        );
        let walker = match plan.org.terminal(id) {
            Some(member) if shared.position_every.is_some() && !member.is_console() => {
                Some(walk::Walker::new(
                    unit_site(&plan.org, member.node),
                    config.spec.walk_radius_m,
                    config.spec.speed_mps,
                    &mut walk_rng,
                ))
            }
            _ => None,
        };
        let link = actor::Link {
            endpoint: endpoints[endpoint_of[&id]].clone(),
            client: clients[&id].clone(),
            gateway: config.gateway,
            server_name: config.server_name.clone(),
            credential: plan.credential(id),
            groups,
            connections: conn_tx,
            walker,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        commands.insert(id, tx);
        actors.spawn_on(
            actor::run(
                t,
                link,
                shared.clone(),
                rx,
                done_tx.clone(),
                stop_rx.clone(),
            ),
            shard,
        );
    }
    drop(done_tx);

    let cpu_start = config.gateway_pid.map(report::sample_process).transpose()?;
    let udp_start = report::udp_buffer_errors();
    let started = Instant::now();
    let mut drills = Vec::new();
    let mut storm = None;
    if config.spec.pattern == Pattern::ReconnectStorm {
        storm = Some(storm::reconnect_storm(&config, &commands, &shared).await);
    } else if config.spec.pattern == Pattern::Alerts {
        let online = |t: TerminalId| commands.contains_key(&t);
        let senders: Vec<(TerminalId, u32, u64)> = senders
            .iter()
            .map(|(c, node)| (*c, *node, plan.under(*node, *c, online)))
            .collect();
        alerts::direct_alerts(&config, &plan, &senders, &commands, &shared).await;
        if config.spec.alert_kind == AlertKindSpec::Drill {
            drills = alerts::drill_reports(&senders, &commands).await;
        }
    } else {
        talk::direct(&config, &plan, &commands, &mut done_rx).await;
    }
    let measured = started.elapsed();
    // Let the last frames arrive, then stop everyone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_end = config.gateway_pid.map(report::sample_process).transpose()?;
    let kernel = match (udp_start, report::udp_buffer_errors()) {
        (Some((r0, s0)), Some((r1, s1))) => Some(report::KernelReport {
            udp_rcvbuf_errors: r1.saturating_sub(r0),
            udp_sndbuf_errors: s1.saturating_sub(s0),
        }),
        _ => None,
    };
    let _ = stop_tx.send(true);

    let mut floor = actor::FloorStats::default();
    let mut grant = Latency::default();
    let mut alert_latency = Latency::default();
    let mut reconnect_time = Latency::default();
    let mut drop_to_back = Latency::default();
    let mut connections = connections;
    let mut confirmed_ids: HashSet<u64> = HashSet::new();
    let mut delivered_ids: Vec<(u64, Duration)> = Vec::new();
    let mut positions = 0u64;
    while let Some(r) = actors.join_next().await {
        let s = r?;
        connections.connection_losses += s.connection_losses;
        connections.reconnects += s.reconnects;
        connections.simulated_drops += s.simulated_drops;
        connections.failed_attempts += s.failed_attempts;
        connections.offline_at_end += u64::from(s.offline_at_end);
        positions += s.positions;
        reconnect_time.merge(&s.reconnect_time);
        drop_to_back.merge(&s.drop_to_back);
        confirmed_ids.extend(&s.confirmed_ids);
        delivered_ids.extend(&s.delivered_ids);
        floor.requests += s.requests;
        floor.granted += s.granted;
        floor.queued += s.queued;
        floor.denied += s.denied;
        floor.preempted += s.preempted;
        floor.revoked += s.revoked;
        floor.frames_sent += s.frames_sent;
        floor.frames_expected += s.frames_expected;
        floor.revoked_tails.extend(s.revoked_tails);
        grant.merge(&s.grant_latency);
        floor.alerts_created += s.alerts_created;
        floor.alerts_confirmed += s.alerts_confirmed;
        floor.alerts_expected += s.alerts_expected;
        floor.alerts_delivered += s.alerts_delivered;
        floor.alerts_duplicates_shown += s.alerts_duplicates_shown;
        for i in 0..3 {
            floor.receipts[i] += s.receipts[i];
        }
    }
    // Deliveries of alerts the consoles saw confirmed in this run. Others:
    // an alert stored just before a gateway restart reaches its recipients
    // though its sender never heard it was accepted, and alerts of earlier
    // runs still alive in the gateway's store reach terminals that were not
    // online then.
    let mut delivered_confirmed = 0u64;
    for (alert, latency) in &delivered_ids {
        if confirmed_ids.contains(alert) {
            delivered_confirmed += 1;
            alert_latency.record(*latency);
        }
    }
    connections.reconnect_time_ms = reconnect_time.percentiles();
    if positions > 0 {
        tracing::info!(positions, "positions reported");
    }
    let mut heard = listen::Heard::default();
    while let Some(r) = listeners.join_next().await {
        let h = r??;
        heard.merge(&h);
    }
    // Every listener is done: the frames talkers sent after their floor was
    // revoked, which no listener heard, were refused by the gateway.
    let mut refused_frames = 0;
    for tail in &floor.revoked_tails {
        let top = logs
            .get(&tail.group)
            .and_then(|log| log.top_heard(tail.talker, tail.burst));
        let (frames, deliveries) = tail.refused(top);
        refused_frames += frames;
        floor.frames_expected = floor.frames_expected.saturating_sub(deliveries);
    }
    for e in &endpoints {
        e.close(quinn::VarInt::from_u32(0), b"run over");
    }
    // Let the close frames go out before the report's plotting holds the
    // thread: the gateway then ends these sessions now, not at its idle
    // timeout, and a following run does not replace them.
    let closing = tokio::time::Instant::now() + Duration::from_secs(2);
    for e in &endpoints {
        let _ = tokio::time::timeout_at(closing, e.wait_idle()).await;
    }

    let gateway = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => {
            let cpu = b.cpu_seconds - a.cpu_seconds;
            Some(GatewayReport {
                cpu_seconds: cpu,
                cpu_us_per_delivered_frame: if heard.received > 0 {
                    cpu * 1e6 / heard.received as f64
                } else {
                    0.0
                },
                rss_mb: b.rss_mb,
            })
        }
        _ => None,
    };
    if let Some(dir) = &config.plots {
        let figures = crate::plot::Figures {
            scenario: &config.spec.name,
            voice_latency: Some(&heard.latency),
            voice_per_second: &heard.per_second,
            alert_latency: Some(&alert_latency),
        };
        match crate::plot::write(dir, &figures) {
            Ok(files) => {
                for f in files {
                    tracing::info!(plot = %f.display(), "plot written");
                }
            }
            Err(e) => tracing::warn!("plots not written: {e:#}"),
        }
    }
    Ok(Report {
        scenario: config.spec.name.clone(),
        duration_s: measured.as_secs_f64(),
        groups: plan.groups.len() as u64,
        connections,
        voice: VoiceReport {
            frames_sent: floor.frames_sent,
            frames_refused_after_revoke: refused_frames,
            frames_expected: floor.frames_expected,
            frames_received: heard.received,
            received_per_second: heard.per_second.clone(),
            delivered_ratio: if floor.frames_expected > 0 {
                heard.received as f64 / floor.frames_expected as f64
            } else {
                0.0
            },
            latency_ms: heard.latency.percentiles(),
            frames_to_non_members: heard.non_member,
            overlapping_talkers: heard.overlapping,
            duplicates: heard.duplicates,
            wrong_speaker: heard.wrong_speaker,
        },
        floor: FloorReport {
            requests: floor.requests,
            granted: floor.granted,
            denied: floor.denied,
            queued: floor.queued,
            preempted: floor.preempted,
            revoked: floor.revoked,
            grant_latency_ms: grant.percentiles(),
        },
        alerts: (config.spec.pattern == Pattern::Alerts).then(|| AlertReport {
            created: floor.alerts_created,
            confirmed: floor.alerts_confirmed,
            expected_deliveries: floor.alerts_expected,
            delivered: delivered_confirmed,
            delivered_unconfirmed: floor.alerts_delivered - delivered_confirmed,
            duplicates_shown: floor.alerts_duplicates_shown,
            lost: floor.alerts_expected.saturating_sub(delivered_confirmed),
            delivery_latency_ms: alert_latency.percentiles(),
            accepted: floor.receipts[0],
            rejected: floor.receipts[1],
            arrived: floor.receipts[2],
        }),
        gateway,
        kernel,
        drills,
        reconnect: storm.map(|(terminals, back, duration)| report::ReconnectReport {
            terminals,
            back,
            duration_s: duration.as_secs_f64(),
            handshakes_per_s: back as f64 / duration.as_secs_f64().max(1e-3),
            drop_to_back_ms: drop_to_back.percentiles(),
        }),
    })
}

/// Where a unit is: its site in the simulated city, placed near its police
/// station.
fn unit_site(org: &Org, unit: u32) -> (i32, i32) {
    let station = org
        .ancestor_of_kind(unit, NodeKind::PoliceStation)
        .unwrap_or(org.root().id);
    walk::unit_site(station, unit)
}
