//! Drill and load reports: what the harness measured, as JSON and as a
//! readable summary.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub samples: u64,
}

/// A latency histogram in microseconds, 1 us to 60 s, 3 significant digits.
///
/// The histogram (about 200 KB) is made on the first sample: every simulated
/// terminal carries several of these, and 30,000 terminals of a city each
/// zeroing their own would cost gigabytes and seconds of page faults for the
/// many that never record anything.
#[derive(Debug, Clone, Default)]
pub struct Latency(Option<Box<Histogram<u64>>>);

impl Latency {
    fn histogram() -> Box<Histogram<u64>> {
        // 1 us .. 60 s with 3 significant figures is a valid hdrhistogram range.
        Box::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one sample (clamped into the histogram's range).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        self.0
            .get_or_insert_with(Self::histogram)
            .saturating_record(us);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        if let Some(other) = other.0.as_deref().filter(|h| !h.is_empty()) {
            // Same bounds by construction.
            let _ = self.0.get_or_insert_with(Self::histogram).add(other);
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|h| h.is_empty())
    }

    /// The cumulative distribution: (latency in ms, share at or below),
    /// one point per distinct recorded value step.
    pub fn cdf_ms(&self) -> Vec<(f64, f64)> {
        let Some(h) = self.0.as_deref().filter(|h| !h.is_empty()) else {
            return Vec::new();
        };
        h.iter_recorded()
            .map(|v| {
                (
                    v.value_iterated_to() as f64 / 1000.0,
                    v.quantile_iterated_to(),
                )
            })
            .collect()
    }

    /// Percentiles in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        let Some(h) = self.0.as_deref().filter(|h| !h.is_empty()) else {
            return Percentiles::default();
        };
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            samples: h.len(),
        }
    }
}

/// Voice figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VoiceReport {
    /// Frames the talkers sent while holding the floor.
    pub frames_sent: u64,
    /// Of those, frames sent after the gateway had revoked the floor
    /// (pre-emption, talk-time limit) and before the talker learned it: the
    /// last frames of a revoked burst that no listener heard. The gateway
    /// refuses them by design (its `voice_not_holder` counter); they are not
    /// expected anywhere.
    pub frames_refused_after_revoke: u64,
    /// Deliveries expected: each sent frame times the listeners of its group,
    /// without the frames refused after a revocation.
    pub frames_expected: u64,
    /// Deliveries that arrived at listeners of the frame's group.
    pub frames_received: u64,
    /// `frames_received / frames_expected`.
    pub delivered_ratio: f64,
    /// Frames received in each second since every terminal was connected
    /// (delivery over time).
    pub received_per_second: Vec<u64>,
    /// Talker send to listener receive.
    pub latency_ms: Percentiles,
    /// Frames that reached a terminal not in the frame's group (must be 0).
    pub frames_to_non_members: u64,
    /// Times a listener got a frame of a burst after a newer burst of the same
    /// group had started: two talkers heard at once (must be 0).
    pub overlapping_talkers: u64,
    /// Frames received twice by the same listener.
    pub duplicates: u64,
    /// Frames whose speaker field was not the talker that sent them.
    pub wrong_speaker: u64,
    /// Of the frames received, those the simulated loss (`--loss`) dropped
    /// before the listener played them: counted as delivered above (the
    /// gateway delivered them), lost on the listener's simulated radio link.
    pub frames_lost_simulated: u64,
}

/// Speech quality through the media plane, from the recorders
/// (`--record-dir`): one listener per group plays what it hears through a
/// jitter buffer and an Opus decoder with FEC recovery and concealment, and
/// what it played is compared with what the talkers said
/// ([`crate::quality`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SpeechReport {
    /// Simulated voice loss on each listener's downlink, percent (`--loss`).
    pub loss_percent: f64,
    /// Whether talkers encode with Opus in-band FEC and listeners recover
    /// lost frames from it (`--fec`); without, every loss is concealed.
    pub fec: bool,
    /// The loss the talkers' encoder plans its FEC for, percent.
    pub encoder_expected_loss_percent: u8,
    /// Recording listeners (one per group).
    pub recordings: u64,
    /// Frames the recorders received (after the simulated loss).
    pub frames_received: u64,
    /// Frames the simulated loss dropped at the recorders.
    pub frames_lost: u64,
    /// Frames decoded from their own packet.
    pub frames_played: u64,
    /// Lost frames recovered from the next packet's in-band FEC.
    pub frames_recovered: u64,
    /// Lost frames concealed (Opus packet-loss concealment).
    pub frames_concealed: u64,
    /// Frames that arrived after their playout time.
    pub frames_late: u64,
    /// What a listener heard against what was said, all recordings pooled.
    pub quality: crate::quality::Figures,
    /// The same per recording.
    pub groups: Vec<GroupSpeech>,
}

/// Speech quality of one group's recording.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSpeech {
    /// The group.
    pub group: u32,
    /// Frames decoded from their own packet, recovered from FEC, concealed.
    pub frames_played: u64,
    /// See [`SpeechReport::frames_recovered`].
    pub frames_recovered: u64,
    /// See [`SpeechReport::frames_concealed`].
    pub frames_concealed: u64,
    /// What this listener heard against what was said.
    pub quality: crate::quality::Figures,
}

/// Floor-control figures, counted at the terminals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorReport {
    /// Talk-key presses.
    pub requests: u64,
    /// Grants (immediate or after queueing).
    pub granted: u64,
    /// Denials.
    pub denied: u64,
    /// Requests that were queued first.
    pub queued: u64,
    /// Bursts pre-empted by a higher class or priority.
    pub preempted: u64,
    /// Bursts revoked for another reason (talk-time limit).
    pub revoked: u64,
    /// Request to grant, for requests granted without queueing.
    pub grant_latency_ms: Percentiles,
}

/// Alert figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertReport {
    /// Alerts the consoles sent.
    pub created: u64,
    /// Alerts the gateway confirmed as stored.
    pub confirmed: u64,
    /// Deliveries expected for confirmed alerts, to recipients online.
    pub expected_deliveries: u64,
    /// Alerts recipients received (each alert once per recipient), of
    /// those the gateway confirmed to their sender.
    pub delivered: u64,
    /// Alerts recipients received whose confirmation no sender of this run
    /// got: stored just before the gateway went away, or left from an
    /// earlier run for terminals offline then. Not in `expected_deliveries`.
    pub delivered_unconfirmed: u64,
    /// Alerts a terminal showed twice (must be 0).
    pub duplicates_shown: u64,
    /// `expected_deliveries - delivered`, never below 0.
    pub lost: u64,
    /// Gateway creation to recipient receipt, for the confirmed alerts
    /// (for a terminal that was offline, this includes the time away).
    pub delivery_latency_ms: Percentiles,
    /// Receipts sent by recipients.
    pub accepted: u64,
    /// Declines.
    pub rejected: u64,
    /// Arrivals.
    pub arrived: u64,
}

/// Gateway process figures, from /proc, when `--gateway-pid` is given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayReport {
    /// CPU seconds (user + system) the gateway used during the run.
    pub cpu_seconds: f64,
    /// Gateway CPU microseconds per delivered voice frame.
    pub cpu_us_per_delivered_frame: f64,
    /// Resident memory at the end of the run, MiB.
    pub rss_mb: f64,
}

/// A reconnect storm: every terminal dropped at the same instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconnectReport {
    /// Terminals dropped.
    pub terminals: u64,
    /// Terminals back online with their groups joined.
    pub back: u64,
    /// Drop to the last terminal back, seconds.
    pub duration_s: f64,
    /// Sessions re-established per second over the storm.
    pub handshakes_per_s: f64,
    /// Each terminal's drop to back.
    pub drop_to_back_ms: Percentiles,
}

/// Failover between gateway nodes, for runs given several addresses
/// (`--gateway A,B,C`) or in which a terminal's reconnect landed on
/// another node than the one it lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    /// The gateway addresses, as given.
    pub nodes: Vec<String>,
    /// Terminals whose home node (first address of their order) each of
    /// `nodes` is: how evenly the fleet spread.
    pub home_terminals: Vec<u64>,
    /// Reconnections after a lost connection that landed on another node
    /// than the lost one.
    pub failovers: u64,
    /// For those, per terminal: the connection's loss, as the terminal
    /// noticed it, to its session back on the other node with its groups
    /// joined, ms. A node that dies unannounced is noticed only after the
    /// idle timeout (30 s by default), which comes before this; a node that
    /// shuts down is noticed at once.
    pub lost_to_rejoined_ms: Percentiles,
}

/// Connection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectionReport {
    /// Terminals the scenario wanted online.
    pub target: u64,
    /// Terminals that authenticated.
    pub established: u64,
    /// Terminals that failed to connect or authenticate.
    pub failed: u64,
    /// Authenticated sessions per second during the ramp.
    pub handshakes_per_s: f64,
    /// Connections that ended unexpectedly during the run (a gateway
    /// restart, the network).
    pub connection_losses: u64,
    /// Terminals back online after such a loss (reconnected with backoff,
    /// groups joined again).
    pub reconnects: u64,
    /// Times the scenario sent a terminal offline on purpose (each comes
    /// back on its own).
    pub simulated_drops: u64,
    /// Connection attempts that failed while reconnecting.
    pub failed_attempts: u64,
    /// Terminals still offline when the run ended.
    pub offline_at_end: u64,
    /// Connection lost to session back with its groups joined.
    pub reconnect_time_ms: Percentiles,
}

/// Kernel counters over the run (the whole machine: gateway and harness).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelReport {
    /// UDP datagrams dropped because a socket's receive buffer was full.
    pub udp_rcvbuf_errors: u64,
    /// UDP datagrams dropped because a socket's send buffer was full.
    pub udp_sndbuf_errors: u64,
}

/// Reads the UDP RcvbufErrors and SndbufErrors counters from /proc/net/snmp.
pub fn udp_buffer_errors() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
    };
    Some((get("RcvbufErrors")?, get("SndbufErrors")?))
}

/// The whole report of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seconds the measured phase lasted.
    pub duration_s: f64,
    /// Talk groups exercised.
    pub groups: u64,
    /// Connections.
    pub connections: ConnectionReport,
    /// Voice.
    pub voice: VoiceReport,
    /// Floor control.
    pub floor: FloorReport,
    /// Speech quality, when listeners recorded (`--record-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<SpeechReport>,
    /// Alerts, for alert scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertReport>,
    /// Gateway process, if measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayReport>,
    /// Kernel drop counters during the measured phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelReport>,
    /// The reconnect storm, for reconnect-storm scenarios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<ReconnectReport>,
    /// Drill reports from the gateway (drill scenarios), as it sent them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drills: Vec<serde_json::Value>,
    /// Failover between gateway nodes (`--gateway A,B,C`, or any terminal
    /// that reconnected to another node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
    /// The voice media plane: forms in use and the harness's uplink packets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaReport>,
}

impl Report {
    /// A readable summary for a terminal.
    pub fn summary(&self) -> String {
        let v = &self.voice;
        let f = &self.floor;
        let l = &v.latency_ms;
        let mut s = format!(
            "scenario {} — {:.0} s, {} groups, {}/{} terminals online ({} failed)\n",
            self.scenario,
            self.duration_s,
            self.groups,
            self.connections.established,
            self.connections.target,
            self.connections.failed,
        );
        let c = &self.connections;
        if c.connection_losses > 0 || c.simulated_drops > 0 || c.offline_at_end > 0 {
            s += &format!(
                "churn   {} connections lost, {} reconnected (in p50 {:.0} ms, max {:.0} ms; {} failed attempts); {} simulated drops; {} offline at the end\n",
                c.connection_losses,
                c.reconnects,
                c.reconnect_time_ms.p50,
                c.reconnect_time_ms.max,
                c.failed_attempts,
                c.simulated_drops,
                c.offline_at_end,
            );
        }
        if let Some(fo) = &self.failover {
            s += &format!(
                "nodes   {} addresses, home terminals {:?}; {} failovers (lost to rejoined p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)\n",
                fo.nodes.len(),
                fo.home_terminals,
                fo.failovers,
                fo.lost_to_rejoined_ms.p50,
                fo.lost_to_rejoined_ms.p99,
                fo.lost_to_rejoined_ms.max,
            );
        }
        // Alert scenarios talk no voice: leave out lines of zeros.
        if v.frames_sent > 0 || f.requests > 0 {
            let refused = match v.frames_refused_after_revoke {
                0 => String::new(),
                n => format!(
                    " ({n} after their floor was revoked: refused by the gateway, not expected)"
                ),
            };
            s += &format!(
                "voice   sent {} frames{refused}, delivered {}/{} ({:.3}%)\n\
                 latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n\
                 safety  to non-members {}  overlapping talkers {}  wrong speaker {}  duplicates {}\n\
                 floor   {} requests: {} granted, {} queued, {} denied, {} pre-empted, {} revoked; grant p50 {:.2} ms p99 {:.2} ms\n",
                v.frames_sent,
                v.frames_received,
                v.frames_expected,
                v.delivered_ratio * 100.0,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                v.frames_to_non_members,
                v.overlapping_talkers,
                v.wrong_speaker,
                v.duplicates,
                f.requests,
                f.granted,
                f.queued,
                f.denied,
                f.preempted,
                f.revoked,
                f.grant_latency_ms.p50,
                f.grant_latency_ms.p99,
            );
        }
        if v.frames_lost_simulated > 0 {
            s += &format!(
                "loss    {} received frames dropped by the simulated loss before playout\n",
                v.frames_lost_simulated
            );
        }
        if let Some(sp) = &self.speech {
            s += &speech_summary(sp);
        }
        if let Some(a) = &self.alerts {
            s += &format!(
                "alerts  {} sent, {} confirmed; delivered {}/{} (lost {}, shown twice {}); latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms\n\
                 receipts {} accepted, {} rejected, {} arrived\n",
                a.created,
                a.confirmed,
                a.delivered,
                a.expected_deliveries,
                a.lost,
                a.duplicates_shown,
                a.delivery_latency_ms.p50,
                a.delivery_latency_ms.p99,
                a.delivery_latency_ms.max,
                a.accepted,
                a.rejected,
                a.arrived,
            );
            if a.delivered_unconfirmed > 0 {
                s += &format!(
                    "        and {} deliveries of alerts not confirmed to a sender of this run\n",
                    a.delivered_unconfirmed
                );
            }
        }
        if let Some(r) = &self.reconnect {
            s += &format!(
                "storm   {}/{} terminals back in {:.2} s ({:.0} sessions/s); each back in p50 {:.0} ms p99 {:.0} ms\n",
                r.back, r.terminals, r.duration_s, r.handshakes_per_s,
                r.drop_to_back_ms.p50, r.drop_to_back_ms.p99
            );
        }
        for d in &self.drills {
            s += &drill_summary(d);
        }
        if let Some(k) = &self.kernel {
            s += &format!(
                "kernel  UDP receive-buffer drops {}, send-buffer drops {}\n",
                k.udp_rcvbuf_errors, k.udp_sndbuf_errors
            );
        }
        if let Some(g) = &self.gateway {
            s += &format!(
                "gateway {:.2} CPU s, RSS {:.1} MiB",
                g.cpu_seconds, g.rss_mb
            );
            if v.frames_received > 0 {
                s += &format!(
                    ", {:.2} us CPU per delivered frame",
                    g.cpu_us_per_delivered_frame
                );
            }
            s += "\n";
        }
        if let Some(m) = &self.media {
            s += &m.summary();
        }
        s
    }
}

/// The voice media plane (`terminal-sim run --media`): which form the
/// terminals' voice travelled in, and every UDP datagram the harness's
/// endpoints sent, from which ptt-bench derives the uplink packets a
/// listener sends per frame it hears.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MediaReport {
    /// What the terminals were told to offer: `srtp` or `datagram`.
    pub requested: String,
    /// Terminals whose voice travelled as SRTP at the end of the run.
    pub srtp: u64,
    /// Terminals on QUIC DATAGRAM voice (not offered, or not answered).
    pub datagram: u64,
    /// Terminals whose SRTP path never verified: back on DATAGRAMs.
    pub fell_back: u64,
    /// UDP datagrams all the harness's endpoints sent during the measured
    /// phase: QUIC packets (each GSO segment) and media packets.
    pub uplink_packets: u64,
    /// Voice frames the talkers sent (the same as `voice.frames_sent`).
    pub voice_frames_sent: u64,
    /// `(uplink_packets - voice_frames_sent) / voice.frames_received`: what
    /// listening costs a handset's radio per frame heard (acknowledgements,
    /// keep-alives, reports; talkers' own acknowledgements included).
    pub listener_uplink_packets_per_frame: f64,
    /// Voice frames sent as SRTP.
    pub srtp_frames_sent: u64,
    /// Voice frames received as SRTP.
    pub srtp_frames_received: u64,
    /// SRTCP receiver reports sent (path probes and keep-alives).
    pub rtcp_sent: u64,
    /// SRTCP packets from the gateway that authenticated.
    pub rtcp_received: u64,
    /// Media packets dropped: replayed, unauthentic or malformed.
    pub dropped: u64,
    /// Media packets for an SSRC no terminal of the endpoint owned.
    pub unknown_ssrc: u64,
}

impl MediaReport {
    /// Adds one terminal's form at the end (`None`: offline) and counters.
    pub fn add(&mut self, form: Option<ptt_terminal::MediaForm>, stats: &ptt_terminal::MediaStats) {
        match form {
            Some(ptt_terminal::MediaForm::Srtp) => self.srtp += 1,
            Some(ptt_terminal::MediaForm::Datagram) => self.datagram += 1,
            Some(ptt_terminal::MediaForm::FellBack) => self.fell_back += 1,
            None => {}
        }
        self.srtp_frames_sent += stats.srtp_sent;
        self.srtp_frames_received += stats.srtp_received;
        self.rtcp_sent += stats.rtcp_sent;
        self.rtcp_received += stats.rtcp_received;
        self.dropped += stats.replayed + stats.unauthentic + stats.malformed;
    }

    /// Sets the uplink figures: `uplink_packets` sent while `frames_sent`
    /// voice frames were, `frames_received` deliveries heard.
    pub fn set_uplink(&mut self, uplink_packets: u64, frames_sent: u64, frames_received: u64) {
        self.uplink_packets = uplink_packets;
        self.voice_frames_sent = frames_sent;
        self.listener_uplink_packets_per_frame = if frames_received > 0 {
            uplink_packets.saturating_sub(frames_sent) as f64 / frames_received as f64
        } else {
            0.0
        };
    }

    fn summary(&self) -> String {
        format!(
            "media   {}: {} terminals on SRTP, {} on DATAGRAM, {} fell back; {} uplink packets ({:.3} per frame heard, talkers' frames aside); {} SRTP frames sent, {} received; {} dropped\n",
            self.requested,
            self.srtp,
            self.datagram,
            self.fell_back,
            self.uplink_packets,
            self.listener_uplink_packets_per_frame,
            self.srtp_frames_sent,
            self.srtp_frames_received,
            self.dropped,
        )
    }
}

/// The speech-quality lines: loss and FEC, what the recorders played, and
/// how closely it followed what was said.
fn speech_summary(sp: &SpeechReport) -> String {
    let q = &sp.quality;
    let db = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1} dB"));
    format!(
        "speech  {} recordings, loss {}%, FEC {}: {} frames played, {} recovered by FEC, {} concealed, {} late ({} lost)\n\
         quality envelope correlation {:.3}, segmental SNR {} (played {}, recovered {}, concealed {}) over {} frames of {} bursts\n",
        sp.recordings,
        sp.loss_percent,
        if sp.fec { "on" } else { "off" },
        sp.frames_played,
        sp.frames_recovered,
        sp.frames_concealed,
        sp.frames_late,
        sp.frames_lost,
        q.envelope_correlation,
        db(q.segmental_snr_db),
        db(q.segmental_snr_db_played),
        db(q.segmental_snr_db_recovered),
        db(q.segmental_snr_db_concealed),
        q.frames,
        q.bursts,
    )
}

/// A drill report's stations and total, one line each: units reached,
/// accepted and arrived within each mark, median times.
fn drill_summary(d: &serde_json::Value) -> String {
    let marks: Vec<String> = d["marks_s"]
        .as_array()
        .map(|m| m.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    let mut s = format!(
        "drill   {} \"{}\": units accepted / arrived within {} s\n",
        d["alert"],
        d["title"].as_str().unwrap_or(""),
        marks.join("/")
    );
    let within = |m: &serde_json::Value| {
        m["within"]
            .as_array()
            .map(|w| {
                w.iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default()
    };
    let secs = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.0} s"));
    for row in d["rows"].as_array().into_iter().flatten() {
        let level = row["level"].as_str().unwrap_or("");
        if level == "unit" {
            continue;
        }
        s +=
            &format!(
            "        {:<14} {:<18} {:>4} units  accepted {:<10} arrived {:<10} median {} / {}\n",
            level,
            row["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("all"),
            row["units"],
            within(&row["accept"]),
            within(&row["arrive"]),
            secs(&row["accept"]["median_s"]),
            secs(&row["arrive"]["median_s"]),
        );
    }
    s
}

/// CPU time (user + system) and RSS of a process, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    /// CPU seconds so far.
    pub cpu_seconds: f64,
    /// Resident set size in MiB.
    pub rss_mb: f64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample_process(pid: u32) -> std::io::Result<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> std::io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| std::io::Error::other("unexpected /proc stat format"))
    };
    // fields[0] is the state (3rd field overall): utime is overall 14 => index 11.
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(ProcessSample {
        cpu_seconds: cpu_ticks / clock_ticks_per_second(),
        rss_mb: rss_kb / 1024.0,
    })
}

/// The kernel's USER_HZ, from `getconf CLK_TCK` (100 on Linux in practice).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut l = Latency::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles();
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 2.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(p.samples, 1000);
        assert_eq!(Latency::default().percentiles(), Percentiles::default());
    }

    #[test]
    fn empty_histograms_cost_nothing_and_merge_like_any_other() {
        let empty = Latency::default();
        assert!(empty.is_empty() && empty.cdf_ms().is_empty());
        assert!(empty.0.is_none(), "no histogram before the first sample");
        let mut total = Latency::default();
        total.merge(&empty);
        assert!(total.0.is_none(), "merging nothing makes nothing");
        let mut one = Latency::default();
        one.record(Duration::from_millis(7));
        total.merge(&one);
        total.merge(&empty);
        let p = total.percentiles();
        assert_eq!(p.samples, 1);
        assert!((p.max - 7.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn summaries_show_what_the_scenario_did() {
        let mut r = Report {
            scenario: "alert-subtree".into(),
            alerts: Some(AlertReport {
                created: 2,
                confirmed: 2,
                ..AlertReport::default()
            }),
            ..Report::default()
        };
        let text = r.summary();
        assert!(text.contains("alerts  2 sent, 2 confirmed"), "{text}");
        assert!(
            !text.contains("voice"),
            "no voice lines for an alert run: {text}"
        );
        r.voice.frames_sent = 10;
        assert!(r.summary().contains("voice   sent 10 frames"));
        assert!(!r.summary().contains("churn"));
        r.connections.connection_losses = 3;
        r.connections.reconnects = 3;
        assert!(
            r.summary()
                .contains("churn   3 connections lost, 3 reconnected"),
            "{}",
            r.summary()
        );
        assert!(!r.summary().contains("nodes"));
        r.failover = Some(FailoverReport {
            nodes: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            home_terminals: vec![5, 7],
            failovers: 2,
            ..FailoverReport::default()
        });
        assert!(
            r.summary()
                .contains("nodes   2 addresses, home terminals [5, 7]; 2 failovers"),
            "{}",
            r.summary()
        );
        assert!(!r.summary().contains("speech"));
        r.speech = Some(SpeechReport {
            loss_percent: 5.0,
            fec: true,
            frames_recovered: 12,
            quality: crate::quality::Figures {
                envelope_correlation: 0.97,
                segmental_snr_db: Some(6.3),
                ..Default::default()
            },
            ..SpeechReport::default()
        });
        let text = r.summary();
        assert!(text.contains("loss 5%, FEC on"), "{text}");
        assert!(text.contains("12 recovered by FEC"), "{text}");
        assert!(
            text.contains("envelope correlation 0.970, segmental SNR 6.3 dB"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["speech"]["quality"]["envelope_correlation"], 0.97);
        assert_eq!(json["failover"]["failovers"], 2);
        assert!(json["failover"]["lost_to_rejoined_ms"]["p99"].is_number());
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample_process(std::process::id()).unwrap();
        assert!(s.rss_mb > 0.0);
        assert!(s.cpu_seconds >= 0.0);
    }
}
