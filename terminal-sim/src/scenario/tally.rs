//! Collecting a run: the gateway's and the kernel's counters around the
//! measured phase, the actors' and listeners' counts, and the report and
//! plots built from them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ptt_codec::GroupId;

use super::actor::FloorStats;
use super::listen::{Heard, SendLog};
use super::{Pattern, Plan, RunConfig, Workload, LOG};
use crate::report::{
    self, AlertReport, ConnectionReport, FailoverReport, FloorReport, GatewayReport, GroupSpeech,
    KernelReport, Latency, MediaReport, ProcessSample, Report, SpeechReport, VoiceReport,
};

/// The gateway's CPU and the kernel's UDP drop counters when the measured
/// phase started, and when that was.
#[derive(Debug)]
pub(super) struct Meter {
    /// The gateway process, if measured.
    pid: Option<u32>,
    /// Its CPU at the start.
    cpu: Option<ProcessSample>,
    /// Kernel UDP receive and send buffer errors at the start.
    udp: Option<(u64, u64)>,
    /// Start of the measured phase.
    started: Instant,
}

/// What the gateway and the kernel spent during the measured phase.
#[derive(Debug)]
pub(super) struct Usage {
    /// The gateway's samples at start and end, if measured.
    cpu: Option<(ProcessSample, ProcessSample)>,
    /// UDP buffer drops over the phase, where the kernel tells.
    kernel: Option<KernelReport>,
}

impl Meter {
    /// Samples the gateway `pid` and the kernel. Call right before the
    /// workload starts: the measured phase begins here.
    pub(super) fn start(pid: Option<u32>) -> anyhow::Result<Meter> {
        let cpu = pid.map(report::sample_process).transpose()?;
        let udp = report::udp_buffer_errors();
        Ok(Meter {
            pid,
            cpu,
            udp,
            started: Instant::now(),
        })
    }

    /// Time since [`Meter::start`]: the measured phase's length when called
    /// as the workload ends.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Samples again. Call once the last frames had time to arrive, before
    /// the actors stop. A gateway gone by then (stopped along with an
    /// interrupted run) leaves its usage out of the report.
    pub(super) fn finish(self) -> Usage {
        let cpu_end = self.pid.and_then(|pid| match report::sample_process(pid) {
            Ok(sample) => Some(sample),
            Err(e) => {
                tracing::warn!(target: LOG, pid, "gateway not measured at the end: {e}");
                None
            }
        });
        let kernel = match (self.udp, report::udp_buffer_errors()) {
            (Some((r0, s0)), Some((r1, s1))) => Some(KernelReport {
                udp_rcvbuf_errors: r1.saturating_sub(r0),
                udp_sndbuf_errors: s1.saturating_sub(s0),
            }),
            _ => None,
        };
        Usage {
            cpu: self.cpu.zip(cpu_end),
            kernel,
        }
    }
}

impl Usage {
    /// The gateway's CPU and memory over the phase, given the voice frames
    /// delivered in it; `None` when the gateway was not measured.
    fn gateway(&self, received: u64) -> Option<GatewayReport> {
        let (a, b) = self.cpu?;
        let cpu = b.cpu_seconds - a.cpu_seconds;
        Some(GatewayReport {
            cpu_seconds: cpu,
            cpu_us_per_delivered_frame: if received > 0 {
                cpu * 1e6 / received as f64
            } else {
                0.0
            },
            rss_mb: b.rss_mb,
        })
    }
}

/// The actors' counters summed over the run.
#[derive(Debug)]
pub(super) struct Totals {
    /// Floor, voice and alert counters; per-terminal fields stay empty.
    floor: FloorStats,
    /// Request-to-grant latency.
    grant: Latency,
    /// Connection lost to session back.
    reconnect_time: Latency,
    /// Simulated drop to session back.
    drop_to_back: Latency,
    /// Reconnections that landed on another node.
    failovers: u64,
    /// Connection lost to session back on another node.
    failover_time: Latency,
    /// The ramp's figures plus the actors' connection counters.
    connections: ConnectionReport,
    /// Alerts the consoles saw confirmed.
    confirmed_ids: HashSet<u64>,
    /// Alerts received, with their creation-to-shown latency.
    delivered_ids: Vec<(u64, Duration)>,
    /// Positions reported.
    positions: u64,
    /// Terminals by media form at the end, and their SRTP counters.
    pub(super) media: MediaReport,
}

impl Totals {
    /// Starts from the ramp's `connections`. Call once the actors have
    /// stopped, then [`Totals::add`] each one's counters.
    pub(super) fn new(connections: ConnectionReport) -> Totals {
        Totals {
            floor: FloorStats::default(),
            grant: Latency::default(),
            reconnect_time: Latency::default(),
            drop_to_back: Latency::default(),
            failovers: 0,
            failover_time: Latency::default(),
            connections,
            confirmed_ids: HashSet::new(),
            delivered_ids: Vec::new(),
            positions: 0,
            media: MediaReport::default(),
        }
    }

    /// Adds one actor's counters.
    pub(super) fn add(&mut self, s: FloorStats) {
        let connections = &mut self.connections;
        connections.connection_losses += s.connection_losses;
        connections.reconnects += s.reconnects;
        connections.simulated_drops += s.simulated_drops;
        connections.failed_attempts += s.failed_attempts;
        connections.offline_at_end += u64::from(s.offline_at_end);
        self.positions += s.positions;
        self.reconnect_time.merge(&s.reconnect_time);
        self.drop_to_back.merge(&s.drop_to_back);
        self.failovers += s.failovers;
        self.failover_time.merge(&s.failover_time);
        self.confirmed_ids.extend(&s.confirmed_ids);
        self.delivered_ids.extend(&s.delivered_ids);
        self.grant.merge(&s.grant_latency);
        self.media.add(s.media_form, &s.media);
        let floor = &mut self.floor;
        floor.requests += s.requests;
        floor.granted += s.granted;
        floor.queued += s.queued;
        floor.denied += s.denied;
        floor.preempted += s.preempted;
        floor.revoked += s.revoked;
        floor.frames_sent += s.frames_sent;
        floor.frames_expected += s.frames_expected;
        floor.revoked_tails.extend(s.revoked_tails);
        floor.alerts_created += s.alerts_created;
        floor.alerts_confirmed += s.alerts_confirmed;
        floor.alerts_expected += s.alerts_expected;
        floor.alerts_delivered += s.alerts_delivered;
        floor.alerts_duplicates_shown += s.alerts_duplicates_shown;
        for i in 0..3 {
            floor.receipts[i] += s.receipts[i];
        }
    }

    /// Logs what only the log shows. Call once every actor is added.
    pub(super) fn log(&self) {
        if self.positions > 0 {
            tracing::info!(target: LOG, positions = self.positions, "positions reported");
        }
    }

    /// Deliveries of alerts the consoles saw confirmed in this run, and
    /// their latency. Others: an alert stored just before a gateway restart
    /// reaches its recipients though its sender never heard it was
    /// accepted, and alerts of earlier runs still alive in the gateway's
    /// store reach terminals that were not online then.
    fn confirmed_deliveries(&self) -> (u64, Latency) {
        let mut delivered = 0u64;
        let mut latency = Latency::default();
        for (alert, l) in &self.delivered_ids {
            if self.confirmed_ids.contains(alert) {
                delivered += 1;
                latency.record(*l);
            }
        }
        (delivered, latency)
    }

    /// The frames talkers sent after their floor was revoked, which no
    /// listener heard: the gateway refused them. Takes their deliveries
    /// off the expected ones. Call once every listener is done.
    fn refused_after_revoke(&mut self, logs: &HashMap<GroupId, std::sync::Arc<SendLog>>) -> u64 {
        let mut refused = 0;
        for tail in &self.floor.revoked_tails {
            let top = logs
                .get(&tail.group)
                .and_then(|log| log.top_heard(tail.talker, tail.burst));
            let (frames, deliveries) = tail.refused(top);
            refused += frames;
            self.floor.frames_expected = self.floor.frames_expected.saturating_sub(deliveries);
        }
        refused
    }
}

/// Everything a finished run measured.
#[derive(Debug)]
pub(super) struct Tally {
    /// The actors' counters.
    pub(super) totals: Totals,
    /// What the listeners heard.
    pub(super) heard: Heard,
    /// Length of the measured phase.
    pub(super) measured: Duration,
    /// The gateway's and the kernel's spending.
    pub(super) usage: Usage,
    /// What the director brought back.
    pub(super) workload: Workload,
    /// UDP datagrams the endpoints sent during the measured phase.
    pub(super) uplink_packets: u64,
    /// Media datagrams the endpoints got for an SSRC none of theirs owned.
    pub(super) unknown_ssrc: u64,
}

impl Tally {
    /// Writes the plots (if asked) and builds the report. Call once the
    /// endpoints are closed: plotting holds the thread. `logs` are the
    /// groups' send logs, complete once every listener is done.
    pub(super) fn report(
        mut self,
        config: &RunConfig,
        plan: &Plan,
        logs: &HashMap<GroupId, std::sync::Arc<SendLog>>,
    ) -> Report {
        let refused_frames = self.totals.refused_after_revoke(logs);
        let (delivered, alert_latency) = self.totals.confirmed_deliveries();
        let totals = &mut self.totals;
        totals.connections.reconnect_time_ms = totals.reconnect_time.percentiles();
        let gateway = self.usage.gateway(self.heard.received);
        if let Some(dir) = &config.plots {
            plot(dir, &config.spec.name, &self.heard, &alert_latency);
        }
        let floor = &totals.floor;
        Report {
            scenario: config.spec.name.clone(),
            duration_s: self.measured.as_secs_f64(),
            groups: plan.groups.len() as u64,
            connections: totals.connections.clone(),
            voice: voice(floor, &self.heard, refused_frames),
            floor: floor_report(floor, &totals.grant),
            speech: speech(config, &self.heard),
            alerts: matches!(config.spec.pattern, Pattern::Alerts | Pattern::LivingCity)
                .then(|| alerts(floor, delivered, &alert_latency)),
            gateway,
            kernel: self.usage.kernel,
            drills: self.workload.drills,
            reconnect: self
                .workload
                .storm
                .map(|storm| storm.report(&totals.drop_to_back)),
            failover: failover(config, plan, totals),
            media: Some(media(
                config,
                totals,
                &self.heard,
                self.uplink_packets,
                self.unknown_ssrc,
            )),
        }
    }
}

/// The failover section: present when the run had several gateway
/// addresses or a terminal reconnected to another node.
fn failover(config: &RunConfig, plan: &Plan, totals: &Totals) -> Option<FailoverReport> {
    let nodes = config.gateways.addrs();
    if nodes.len() < 2 && totals.failovers == 0 {
        return None;
    }
    let mut home_terminals = vec![0u64; nodes.len()];
    for id in plan.terminals.keys() {
        let home = config.gateways.order_for(*id)[0];
        if let Some(i) = nodes.iter().position(|a| *a == home) {
            home_terminals[i] += 1;
        }
    }
    Some(FailoverReport {
        nodes: nodes.iter().map(ToString::to_string).collect(),
        home_terminals,
        failovers: totals.failovers,
        lost_to_rejoined_ms: totals.failover_time.percentiles(),
    })
}

/// The media section: forms in use and the endpoints' uplink packets.
fn media(
    config: &RunConfig,
    totals: &Totals,
    heard: &Heard,
    uplink_packets: u64,
    unknown_ssrc: u64,
) -> MediaReport {
    let mut m = totals.media.clone();
    m.requested = config.media.to_string();
    m.set_uplink(uplink_packets, totals.floor.frames_sent, heard.received);
    m.unknown_ssrc = unknown_ssrc;
    m
}

/// The voice section: what talkers sent and listeners heard.
fn voice(floor: &FloorStats, heard: &Heard, refused_frames: u64) -> VoiceReport {
    VoiceReport {
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
        frames_lost_simulated: heard.lost_simulated,
    }
}

/// The speech section: present when listeners recorded (`--record-dir`).
fn speech(config: &RunConfig, heard: &Heard) -> Option<SpeechReport> {
    config.record_dir.as_ref()?;
    let mut total = SpeechReport {
        loss_percent: config.loss_percent,
        fec: config.fec,
        encoder_expected_loss_percent: config.encoder().expected_loss_percent,
        ..SpeechReport::default()
    };
    let mut score = crate::quality::Score::default();
    let mut recordings: Vec<_> = heard.recordings.iter().collect();
    recordings.sort_by_key(|(g, _, _)| g.0);
    for (group, lost, r) in recordings {
        let p = &r.playout;
        total.recordings += 1;
        total.frames_received += p.received;
        total.frames_lost += lost;
        total.frames_played += p.played;
        total.frames_recovered += p.recovered;
        total.frames_concealed += p.concealed;
        total.frames_late += p.late;
        score.merge(&r.score);
        total.groups.push(GroupSpeech {
            group: group.0,
            frames_played: p.played,
            frames_recovered: p.recovered,
            frames_concealed: p.concealed,
            quality: (&r.score).into(),
        });
    }
    total.quality = (&score).into();
    Some(total)
}

/// The floor section: what floor control answered.
fn floor_report(floor: &FloorStats, grant: &Latency) -> FloorReport {
    FloorReport {
        requests: floor.requests,
        granted: floor.granted,
        denied: floor.denied,
        queued: floor.queued,
        preempted: floor.preempted,
        revoked: floor.revoked,
        grant_latency_ms: grant.percentiles(),
    }
}

/// The alert section, given the `delivered` deliveries of confirmed alerts
/// and their latency.
fn alerts(floor: &FloorStats, delivered: u64, latency: &Latency) -> AlertReport {
    AlertReport {
        created: floor.alerts_created,
        confirmed: floor.alerts_confirmed,
        expected_deliveries: floor.alerts_expected,
        delivered,
        delivered_unconfirmed: floor.alerts_delivered - delivered,
        duplicates_shown: floor.alerts_duplicates_shown,
        lost: floor.alerts_expected.saturating_sub(delivered),
        delivery_latency_ms: latency.percentiles(),
        accepted: floor.receipts[0],
        rejected: floor.receipts[1],
        arrived: floor.receipts[2],
    }
}

/// Writes the run's PNG plots into `dir`; a failure is logged, not fatal.
fn plot(dir: &std::path::Path, scenario: &str, heard: &Heard, alert_latency: &Latency) {
    let figures = crate::plot::Figures {
        scenario,
        voice_latency: Some(&heard.latency),
        voice_per_second: &heard.per_second,
        alert_latency: Some(alert_latency),
    };
    match crate::plot::write(dir, &figures) {
        Ok(files) => {
            for f in files {
                tracing::info!(target: LOG, plot = %f.display(), "plot written");
            }
        }
        Err(e) => tracing::warn!(target: LOG, "plots not written: {e:#}"),
    }
}
