//! The scenario runner behind `terminal-sim run`: connects the terminals a
//! scenario needs, drives talkers, listens everywhere, and reports.

pub mod actor;
pub mod churn;
pub mod listen;
pub mod plan;
pub mod spec;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use ptt_codec::audio::{Encoder, EncoderConfig};
use ptt_codec::{Class, GroupId, TerminalId};
use ptt_org::{NodeKind, Org};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::report::{
    self, AlertReport, ConnectionReport, FloorReport, GatewayReport, Latency, Report, VoiceReport,
};
use crate::terminal::{self, Terminal};
pub use plan::Plan;
pub use spec::{AlertKindSpec, AlertTarget, Pattern, Response, Senders, Spec};

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
            listen_loop(
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
        storm = Some(reconnect_storm(&config, &commands, &shared).await);
    } else if config.spec.pattern == Pattern::Alerts {
        let online = |t: TerminalId| commands.contains_key(&t);
        let senders: Vec<(TerminalId, u32, u64)> = senders
            .iter()
            .map(|(c, node)| (*c, *node, plan.under(*node, *c, online)))
            .collect();
        direct_alerts(&config, &plan, &senders, &commands, &shared).await;
        if config.spec.alert_kind == AlertKindSpec::Drill {
            drills = drill_reports(&senders, &commands).await;
        }
    } else {
        direct(&config, &plan, &commands, &mut done_rx).await;
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

/// Drops every terminal at the same instant and waits (up to `drain_ms`)
/// until all are back: returns how many dropped, how many came back, and
/// how long until the last one did.
async fn reconnect_storm(
    config: &RunConfig,
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    shared: &actor::Shared,
) -> (u64, u64, Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::time::sleep(Duration::from_millis(config.spec.gap_ms)).await;
    let terminals = commands.len() as u64;
    tracing::info!(terminals, "dropping every connection at once");
    let dropped = Instant::now();
    for tx in commands.values() {
        let _ = tx.send(actor::Command::GoOffline {
            after: Duration::ZERO,
            away: Duration::ZERO,
        });
    }
    let limit = dropped + Duration::from_millis(config.spec.drain_ms);
    let progress = indicatif::ProgressBar::new(terminals).with_style(
        indicatif::ProgressStyle::with_template("reconnecting {bar:40} {pos}/{len} {per_sec}")
            .expect("valid template"),
    );
    loop {
        let back = shared.back_after_drop.load(Relaxed);
        progress.set_position(back);
        if back >= terminals || Instant::now() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish_and_clear();
    let back = shared.back_after_drop.load(Relaxed);
    let duration = dropped.elapsed();
    tracing::info!(back, terminals, "reconnect storm over in {duration:?}");
    (terminals, back, duration)
}

/// Asks every sender for the reports of the drills it started.
async fn drill_reports(
    senders: &[(TerminalId, u32, u64)],
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (console, _, _) in senders {
        let Some(tx) = commands.get(console) else {
            continue;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(actor::Command::DrillReports { reply }).is_err() {
            continue;
        }
        for json in answer.await.unwrap_or_default() {
            match serde_json::from_str(&json) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!("unreadable drill report: {e}"),
            }
        }
    }
    out
}

/// Decides who presses the talk key when, per the scenario's pattern, until
/// the duration is over.
async fn direct(
    config: &RunConfig,
    plan: &Plan,
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    done: &mut mpsc::UnboundedReceiver<GroupId>,
) {
    let spec = &config.spec;
    let deadline = tokio::time::Instant::now() + config.duration;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let press = |t: TerminalId, group: GroupId, class: Class, hold: Duration| {
        if let Some(tx) = commands.get(&t) {
            let _ = tx.send(actor::Command::Press { group, class, hold });
        }
    };
    let burst = Duration::from_millis(spec.burst_ms);
    let gap = Duration::from_millis(spec.gap_ms);
    match spec.pattern {
        Pattern::Steady => {
            // Each group's next talker presses `gap` after the previous burst
            // ended; the talk stops before the deadline.
            let mut turn: HashMap<GroupId, usize> = HashMap::new();
            let mut talkers: HashMap<GroupId, Vec<TerminalId>> = HashMap::new();
            for (i, g) in plan.groups.iter().enumerate() {
                if !talks(i, spec.talk_share) {
                    continue;
                }
                let online: Vec<TerminalId> = g
                    .talkers
                    .iter()
                    .copied()
                    .filter(|t| commands.contains_key(t))
                    .collect();
                if let Some(first) = online.first() {
                    press(*first, g.id, Class::Normal, burst.min(config.duration));
                }
                talkers.insert(g.id, online);
                turn.insert(g.id, 0);
            }
            let mut due: Vec<(tokio::time::Instant, GroupId)> = Vec::new();
            loop {
                let next_due = due.iter().map(|(t, _)| *t).min();
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    Some(group) = done.recv() => due.push((tokio::time::Instant::now() + gap, group)),
                    _ = tokio::time::sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {
                        let now = tokio::time::Instant::now();
                        let (ready, later): (Vec<_>, Vec<_>) = due.drain(..).partition(|(t, _)| *t <= now);
                        due = later;
                        for (_, group) in ready {
                            let list = &talkers[&group];
                            if list.is_empty() || deadline <= now {
                                continue;
                            }
                            let i = turn.entry(group).or_default();
                            *i = (*i + 1) % list.len();
                            let hold = burst.min(deadline - now);
                            press(list[*i], group, Class::Normal, hold);
                        }
                    }
                }
            }
        }
        // Alert scenarios have their own director.
        Pattern::Alerts => {}
        Pattern::Contention => loop {
            let now = tokio::time::Instant::now();
            if now + burst >= deadline {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            for g in &plan.groups {
                let online: Vec<TerminalId> = g
                    .talkers
                    .iter()
                    .copied()
                    .filter(|t| commands.contains_key(t))
                    .collect();
                if online.is_empty() {
                    continue;
                }
                let n = spec.presses_per_round.min(online.len());
                let chosen = rand::seq::index::sample(&mut rng, online.len(), n);
                let emergency = rng.gen_bool(spec.emergency_ratio.clamp(0.0, 1.0));
                for (k, i) in chosen.iter().enumerate() {
                    let class = if emergency && k == 0 {
                        Class::Emergency
                    } else {
                        Class::Normal
                    };
                    let hold = burst.mul_f64(rng.gen_range(0.5..=1.0));
                    press(online[i], g.id, class, hold);
                }
                if rng.gen_bool(spec.console_ratio.clamp(0.0, 1.0)) {
                    if let Some(console) = g.console.filter(|c| commands.contains_key(c)) {
                        press(console, g.id, Class::Normal, burst / 2);
                    }
                }
            }
            tokio::time::sleep(burst + gap).await;
            while done.try_recv().is_ok() {}
        },
        // Directed by `reconnect_storm`.
        Pattern::ReconnectStorm => {}
    }
}

/// Whether the `i`-th exercised group talks when a `share` of them do:
/// spread evenly over the groups (and so over the city's stations).
pub fn talks(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

/// Where a unit is: its site in the simulated city, placed near its police
/// station.
fn unit_site(org: &Org, unit: u32) -> (i32, i32) {
    let station = org
        .ancestor_of_kind(unit, NodeKind::PoliceStation)
        .unwrap_or(org.root().id);
    walk::unit_site(station, unit)
}

/// Every `gap_ms`, each sender fires `alerts_per_round` dispatches (to its
/// subtree, or to the members nearest an incident near one of its units)
/// and a share of the recipients drops offline, until the duration is
/// over; then waits for every expected delivery and the last responses.
async fn direct_alerts(
    config: &RunConfig,
    plan: &Plan,
    senders: &[(TerminalId, u32, u64)],
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    shared: &actor::Shared,
) {
    let spec = &config.spec;
    let deadline = tokio::time::Instant::now() + config.duration;
    let gap = Duration::from_millis(spec.gap_ms.max(100));
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x616c_6572_7473);
    // Nearest: the exercised units each console commands, for incidents.
    let units_of: HashMap<TerminalId, Vec<u32>> = senders
        .iter()
        .map(|(c, node, _)| {
            let units = plan
                .groups
                .iter()
                .filter(|g| plan.org.is_ancestor_or_self(*node, g.id.0))
                .map(|g| g.id.0)
                .collect();
            (*c, units)
        })
        .collect();
    // Offline churn: every recipient online but the senders.
    let mut candidates: Vec<TerminalId> = commands
        .keys()
        .copied()
        .filter(|t| !senders.iter().any(|(s, _, _)| s == t))
        .collect();
    candidates.sort_unstable();
    let mut back_at: HashMap<TerminalId, tokio::time::Instant> = HashMap::new();
    let mut round = 0u32;
    loop {
        round += 1;
        for (console, node, expected) in senders {
            let Some(tx) = commands.get(console) else {
                continue;
            };
            for i in 1..=spec.alerts_per_round {
                let (target, location, expected) = match spec.alert_target {
                    AlertTarget::Subtree => (
                        ptt_codec::Target::Subtree {
                            node: *node,
                            roles: 0,
                        },
                        ptt_codec::Location {
                            lat_e7: 290_800_000,
                            lon_e7: 1_196_400_000,
                            address: "城南路165号".into(),
                        },
                        Some(*expected),
                    ),
                    AlertTarget::Nearest => {
                        let units = &units_of[console];
                        if units.is_empty() {
                            continue;
                        }
                        let unit = units[rng.gen_range(0..units.len())];
                        let (lat_e7, lon_e7) =
                            walk::near(unit_site(&plan.org, unit), spec.walk_radius_m, &mut rng);
                        (
                            ptt_codec::Target::Nearest {
                                k: spec.nearest_k,
                                radius_m: spec.nearest_radius_m,
                            },
                            ptt_codec::Location {
                                lat_e7,
                                lon_e7,
                                address: format!("共治单元 {unit} 附近"),
                            },
                            None,
                        )
                    }
                };
                let body = ptt_codec::AlertBody {
                    kind: match spec.alert_kind {
                        AlertKindSpec::Dispatch => ptt_codec::AlertKind::Dispatch,
                        AlertKindSpec::Drill => ptt_codec::AlertKind::Drill,
                    },
                    priority: 3,
                    ttl_s: spec.ttl_s,
                    title: match spec.alert_kind {
                        AlertKindSpec::Dispatch => {
                            format!("指令 {round}-{i}: {} 两名男子试图拉车门", location.address)
                        }
                        AlertKindSpec::Drill => {
                            format!("拉动演练 {round}-{i}: {}", location.address)
                        }
                    },
                    text: match spec.alert_kind {
                        AlertKindSpec::Dispatch => "就近处置，到场后回报。".into(),
                        AlertKindSpec::Drill => "演练：接单后立即出发，到场后回报。".into(),
                    },
                    location: Some(location),
                    attachments: Vec::new(),
                };
                let _ = tx.send(actor::Command::Alert {
                    target,
                    body,
                    expected,
                });
            }
        }
        let now = tokio::time::Instant::now();
        let next = now + gap;
        if spec.offline_ratio > 0.0 && now < deadline {
            let away_max = Duration::from_millis(spec.offline_ms);
            for t in churn::select_offline(&candidates, spec.offline_ratio, &back_at, now, &mut rng)
            {
                // Somewhere in this round, before the measured phase ends.
                let after = gap.min(deadline - now).mul_f64(rng.gen_range(0.0..1.0));
                let away = churn::offline_for(away_max, &mut rng);
                // Eligible again once surely back (reconnecting takes a moment).
                back_at.insert(t, now + after + away + Duration::from_secs(3));
                if let Some(tx) = commands.get(&t) {
                    let _ = tx.send(actor::Command::GoOffline { after, away });
                }
            }
        }
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    tokio::time::sleep_until(deadline).await;
    // Wait (up to drain_ms) until every terminal sent offline is back and
    // every confirmed alert reached every recipient, then for the last
    // responses.
    use std::sync::atomic::Ordering::Relaxed;
    let limit = tokio::time::Instant::now() + Duration::from_millis(spec.drain_ms);
    let all_back = back_at.values().max().copied();
    while (shared.alerts_delivered.load(Relaxed) < shared.alerts_expected.load(Relaxed)
        || all_back.is_some_and(|t| tokio::time::Instant::now() < t))
        && tokio::time::Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(
        spec.response.max_ms(spec.respond_ms) + spec.response.max_ms(spec.arrive_ms) + 500,
    ))
    .await;
}

/// Reads a terminal's voice datagrams until stopped, checking each, and
/// writing the recorded groups' audio to WAV.
async fn listen_loop(
    mut connections: watch::Receiver<quinn::Connection>,
    groups: Vec<GroupId>,
    logs: Arc<HashMap<GroupId, Arc<listen::SendLog>>>,
    record: Vec<(GroupId, PathBuf)>,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
) -> anyhow::Result<listen::Heard> {
    let mut listener = listen::Listener::new(&groups, logs).since(epoch);
    let mut recorders = record
        .into_iter()
        .map(|(g, path)| Ok((g, crate::record::Recorder::create(&path)?)))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let mut playout = tokio::time::interval(Duration::from_millis(20));
    let mut conn = connections.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            // The terminal reconnected: listen on the new connection.
            c = connections.changed() => {
                if c.is_err() {
                    break;
                }
                conn = connections.borrow_and_update().clone();
            }
            d = conn.read_datagram() => {
                let Ok(datagram) = d else {
                    // Connection gone: wait for the next one.
                    tokio::select! {
                        _ = stop.changed() => break,
                        c = connections.changed() => {
                            if c.is_err() {
                                break;
                            }
                            conn = connections.borrow_and_update().clone();
                        }
                    }
                    continue;
                };
                let now = Instant::now();
                let Ok((header, _)) = ptt_codec::VoiceHeader::decode(&datagram) else { continue };
                let voice = terminal::Voice { header, datagram };
                listener.on_frame(&voice, now);
                if let Some(r) = recorders.get_mut(&header.group) {
                    r.push(now, &voice);
                }
            }
            _ = playout.tick(), if !recorders.is_empty() => {
                let now = Instant::now();
                for r in recorders.values_mut() {
                    r.play(now)?;
                }
            }
        }
    }
    for (_, r) in recorders {
        r.finish()?;
    }
    Ok(listener.heard)
}
