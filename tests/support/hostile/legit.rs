//! What runs beside an attack: legit voice, the SOS and dispatch probes,
//! and the outcome checked against the bounds.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ptt_codec::{AlertBody, AlertKind, Class, GroupId, Target, TerminalId};
use ptt_terminal_sim::terminal::{Terminal, ANSWER_TIMEOUT};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;

/// One voice frame's Opus packet: 80 bytes, a 20 ms frame at 32 kbit/s.
const OPUS_FRAME: [u8; 80] = [0xa5; 80];

/// Time between two voice frames: 20 ms, 50 frames a second.
const FRAME_TIME: Duration = Duration::from_millis(20);

/// Longest burst the talker keeps the floor for: below the 30 s talk limit
/// (TS 24.380 T2), so the gateway never revokes it.
const BURST: Duration = Duration::from_secs(20);

/// How long listeners keep counting after the talker stopped: frames in
/// flight on loopback arrive within milliseconds, a busy machine stalls a
/// task for a few hundred.
const VOICE_GRACE: Duration = Duration::from_millis(500);

/// Time between two rounds of probes during an attack.
pub const PROBE_GAP: Duration = Duration::from_millis(250);

/// Legit voice in one group: a talker sending 20 ms Opus-sized frames at
/// 50 a second in bursts below the talk limit, listeners counting the
/// frames they receive from it.
#[derive(Debug)]
pub struct LegitVoice {
    stop: watch::Sender<bool>,
    talker: JoinHandle<Result<u64, String>>,
    listeners: Vec<(u32, JoinHandle<Heard>)>,
}

/// What one listener heard.
#[derive(Debug, Clone, Default)]
struct Heard {
    frames: u64,
    foreign: u64,
    lost_connection: Option<String>,
}

/// How legit voice fared.
#[derive(Debug, Clone, Default)]
pub struct VoiceTally {
    /// Frames the talker sent.
    pub sent: u64,
    /// Frames of the talker each listener received (distinct).
    pub received: BTreeMap<u32, u64>,
    /// Frames of anyone else each listener received.
    pub foreign: BTreeMap<u32, u64>,
    /// Why the talker stopped early, if it did.
    pub talker_failed: Option<String>,
    /// Listeners whose connection ended, and why.
    pub listeners_lost: BTreeMap<u32, String>,
}

impl VoiceTally {
    /// The smallest share of the talker's frames a listener received.
    pub fn delivered(&self) -> f64 {
        let least = self.received.values().copied().min().unwrap_or(0);
        if self.sent == 0 {
            0.0
        } else {
            least as f64 / self.sent as f64
        }
    }
}

impl LegitVoice {
    /// Connects the talker and listeners, joins them to `group` and starts
    /// talking; returns once every listener heard a first frame.
    pub async fn start(
        gw: &GatewayProcess,
        group: GroupId,
        talker: u32,
        listeners: &[u32],
    ) -> LegitVoice {
        let (stop, stopped) = watch::channel(false);
        let (first_tx, mut first) = tokio::sync::mpsc::channel(listeners.len().max(1));
        let mut tasks = Vec::new();
        for &id in listeners {
            let mut t = gw.terminal(id).await;
            t.join(group)
                .await
                .unwrap_or_else(|e| panic!("listener {id} joining {group}: {e}"));
            let stopped = stopped.clone();
            let first = first_tx.clone();
            tasks.push((id, tokio::spawn(listen(t, talker, group, stopped, first))));
        }
        let mut t = gw.terminal(talker).await;
        t.join(group)
            .await
            .unwrap_or_else(|e| panic!("talker {talker} joining {group}: {e}"));
        let talker = tokio::spawn(talk(t, group, stopped));
        for _ in listeners {
            tokio::time::timeout(ANSWER_TIMEOUT, first.recv())
                .await
                .expect("every listener hears the talker within 10 s");
        }
        LegitVoice {
            stop,
            talker,
            listeners: tasks,
        }
    }

    /// Stops talking, lets the last frames arrive, and counts.
    pub async fn finish(self) -> VoiceTally {
        let _ = self.stop.send(true);
        let mut tally = VoiceTally::default();
        match self.talker.await {
            Ok(Ok(sent)) => tally.sent = sent,
            Ok(Err(e)) => tally.talker_failed = Some(e),
            Err(e) => tally.talker_failed = Some(format!("talker task: {e}")),
        }
        for (id, task) in self.listeners {
            let heard = task.await.unwrap_or_default();
            tally.received.insert(id, heard.frames);
            tally.foreign.insert(id, heard.foreign);
            if let Some(why) = heard.lost_connection {
                tally.listeners_lost.insert(id, why);
            }
        }
        tally
    }
}

/// The talker: bursts of frames at 50 a second until stopped; returns the
/// frames sent, or why it could not go on (the frames sent so far are then
/// lost to the tally, which fails the test anyway).
async fn talk(
    mut t: Terminal,
    group: GroupId,
    mut stopped: watch::Receiver<bool>,
) -> Result<u64, String> {
    let mut sent = 0u64;
    loop {
        let burst = t
            .talk(group, Class::Normal)
            .await
            .map_err(|e| format!("floor request: {e}"))?;
        let started = Instant::now();
        let mut tick = tokio::time::interval(FRAME_TIME);
        // A stalled test task sends fewer frames, never a catch-up burst
        // that the gateway's voice rate limit would rightly cut.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u16;
        let stop = loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => {}
            }
            let stop = *stopped.borrow();
            let end = stop || started.elapsed() >= BURST;
            t.send_voice(group, burst, seq, &OPUS_FRAME, end)
                .map_err(|e| format!("sending voice: {e}"))?;
            sent += 1;
            seq = seq.wrapping_add(1);
            if end {
                break stop;
            }
        };
        // One frame time for the last datagram to pass the release on the
        // control stream.
        tokio::time::sleep(2 * FRAME_TIME).await;
        t.release(group)
            .map_err(|e| format!("releasing the floor: {e}"))?;
        if stop {
            return Ok(sent);
        }
    }
}

/// A listener: counts the talker's distinct frames until stopped (plus
/// [`VOICE_GRACE`]) or its connection ends; tells `first` when it heard
/// one.
async fn listen(
    t: Terminal,
    talker: u32,
    group: GroupId,
    mut stopped: watch::Receiver<bool>,
    first: tokio::sync::mpsc::Sender<()>,
) -> Heard {
    let mut frames = HashSet::new();
    let mut heard = Heard::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            v = t.recv_voice() => match v {
                Ok(v) if v.header.speaker == talker && v.header.group == group => {
                    if frames.is_empty() {
                        let _ = first.try_send(());
                    }
                    frames.insert((v.header.burst, v.header.seq));
                }
                Ok(_) => heard.foreign += 1,
                Err(e) => {
                    heard.lost_connection = Some(e.to_string());
                    break;
                }
            },
            _ = stopped.changed(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + VOICE_GRACE);
            }
            () = grace => break,
        }
    }
    heard.frames = frames.len() as u64;
    heard
}

/// The probes of what must keep working during an attack: an SOS stored
/// (the sender's answer), a dispatch delivered (a console's alert reaching
/// an online guard).
#[derive(Debug)]
pub struct Probes {
    sos: Terminal,
    console: Terminal,
    guard: Terminal,
}

/// One probe's outcome: how long it took, or what went wrong.
pub type Timing = Result<Duration, String>;

impl Probes {
    /// Connects [`SOS_PROBE`], [`DISPATCH_CONSOLE`] and [`DISPATCHED_GUARD`].
    pub async fn connect(gw: &GatewayProcess) -> Probes {
        Probes {
            sos: gw.terminal(SOS_PROBE).await,
            console: gw.terminal(DISPATCH_CONSOLE).await,
            guard: gw.terminal(DISPATCHED_GUARD).await,
        }
    }

    /// Raises an SOS and times it until the gateway answers that it stored
    /// it; then cancels it, so its hot-mic burst ends.
    pub async fn sos_stored(&mut self) -> Timing {
        let started = Instant::now();
        let stored = self.sos.sos().await.map_err(|e| format!("SOS: {e}"))?;
        let took = started.elapsed();
        self.sos
            .cancel_sos(TerminalId(SOS_PROBE))
            .await
            .map_err(|e| format!("cancelling SOS {stored}: {e}"))?;
        Ok(took)
    }

    /// Sends a dispatch to the guard and times it until the guard has it.
    pub async fn dispatch_delivered(&mut self) -> Timing {
        let started = Instant::now();
        let (alert, _) = self
            .console
            .send_alert(
                Target::Terminals(vec![TerminalId(DISPATCHED_GUARD)]),
                dispatch("Probe"),
            )
            .await
            .map_err(|e| format!("dispatch: {e}"))?;
        loop {
            let got = self
                .guard
                .next_alert()
                .await
                .map_err(|e| format!("dispatch {alert} not delivered: {e}"))?;
            if got.alert == alert {
                return Ok(started.elapsed());
            }
        }
    }

    /// Runs both probes in turn every [`PROBE_GAP`] until `stop` says so,
    /// then returns them with their timings.
    pub fn run(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<(Probes, ProbeTimings)> {
        tokio::spawn(async move {
            let mut timings = ProbeTimings::default();
            loop {
                timings.sos.push(self.sos_stored().await);
                timings.dispatch.push(self.dispatch_delivered().await);
                if *stop.borrow() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_GAP) => {}
                    _ = stop.changed() => {}
                }
            }
            (self, timings)
        })
    }
}

/// Timings of the probes during an attack.
#[derive(Debug, Clone, Default)]
pub struct ProbeTimings {
    /// SOS raised until stored.
    pub sos: Vec<Timing>,
    /// Dispatch sent until delivered.
    pub dispatch: Vec<Timing>,
}

/// A dispatch alert with `title`.
pub fn dispatch(title: &str) -> AlertBody {
    AlertBody {
        kind: AlertKind::Dispatch,
        priority: 3,
        ttl_s: 600,
        title: title.into(),
        text: "North entrance".into(),
        location: None,
        attachments: Vec::new(),
    }
}

/// A work report naming `attachments`.
pub fn report(title: &str, attachments: &[u64]) -> AlertBody {
    AlertBody {
        kind: AlertKind::Report,
        priority: 1,
        ttl_s: 600,
        title: title.into(),
        text: "Patrol done".into(),
        location: None,
        attachments: attachments
            .iter()
            .map(|id| ptt_codec::AttachmentRef {
                id: *id,
                size: 0,
                mime: String::new(),
            })
            .collect(),
    }
}

/// A photo-sized payload of `len` bytes that is not all one byte.
pub fn photo(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Everything that runs beside an attack: legit voice, the probes, the
/// watch. Start it, run the attack, then [`Scene::finish`].
#[derive(Debug)]
pub struct Scene {
    voice: LegitVoice,
    watch: Watch,
    stop_probes: watch::Sender<bool>,
    probes: JoinHandle<(Probes, ProbeTimings)>,
    started: Instant,
}

impl Scene {
    /// Starts legit voice in [`VOICE_GROUP`] ([`TALKER`] to [`LISTENERS`]),
    /// the probes and the watch on `gw`.
    pub async fn start(gw: &GatewayProcess) -> Scene {
        let voice = LegitVoice::start(gw, VOICE_GROUP, TALKER, &LISTENERS).await;
        let probes = Probes::connect(gw).await;
        let watch = Watch::start(gw);
        let (stop_probes, stop) = watch::channel(false);
        let probes = probes.run(stop);
        Scene {
            voice,
            watch,
            stop_probes,
            probes,
            started: Instant::now(),
        }
    }

    /// Stops legit traffic and the probes (after their current round) and
    /// returns how everything fared.
    pub async fn finish(self) -> Outcome {
        let _ = self.stop_probes.send(true);
        let probes = match self.probes.await {
            Ok((_, timings)) => timings,
            Err(e) => ProbeTimings {
                sos: vec![Err(format!("probe task: {e}"))],
                dispatch: Vec::new(),
            },
        };
        let voice = self.voice.finish().await;
        let peaks = self.watch.finish();
        Outcome {
            voice,
            probes,
            peaks,
            lasted: self.started.elapsed(),
        }
    }
}

/// How legit traffic, the probes and the gateway's resources fared during
/// an attack.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Legit voice.
    pub voice: VoiceTally,
    /// SOS and dispatch timings.
    pub probes: ProbeTimings,
    /// Gateway memory and disk.
    pub peaks: Peaks,
    /// How long the scene ran.
    pub lasted: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "scene lasted {:?}", self.lasted)?;
        writeln!(
            f,
            "voice: {:.2} % delivered; sent {}, received {:?} (and {:?} from others), talker failed {:?}, listeners lost {:?}",
            100.0 * self.voice.delivered(),
            self.voice.sent,
            self.voice.received,
            self.voice.foreign,
            self.voice.talker_failed,
            self.voice.listeners_lost
        )?;
        writeln!(f, "SOS stored: {:?}", self.probes.sos)?;
        writeln!(f, "dispatch delivered: {:?}", self.probes.dispatch)?;
        write!(
            f,
            "gateway RSS {:.1} -> max {:.1} MiB (bound {:.0}); data dir {:.2} -> max {:.2} MiB (growth bound {:.0}){}",
            mib(self.peaks.rss_start),
            mib(self.peaks.rss_max),
            mib(RSS_BOUND),
            mib(self.peaks.disk_start),
            mib(self.peaks.disk_max),
            mib(DISK_BOUND),
            if self.peaks.killed {
                "; KILLED past the safety limit"
            } else {
                ""
            }
        )
    }
}

impl Outcome {
    /// The failures against the bounds of issue 11 item 10: legit voice at
    /// least [`MIN_VOICE_DELIVERED`], every SOS stored within
    /// [`SOS_STORED_WITHIN`], every dispatch delivered within
    /// [`DISPATCH_DELIVERED_WITHIN`], memory under [`RSS_BOUND`], data
    /// growth under [`DISK_BOUND`]. Empty when all held.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.voice.delivered() < MIN_VOICE_DELIVERED {
            failures.push(format!(
                "legit voice {:.2} % delivered, under {} %",
                100.0 * self.voice.delivered(),
                100.0 * MIN_VOICE_DELIVERED
            ));
        }
        let late = |timings: &[Timing], within: Duration, what: &str| {
            let mut out = Vec::new();
            if timings.is_empty() {
                out.push(format!("no {what} probe ran"));
            }
            for t in timings {
                match t {
                    Ok(took) if *took <= within => {}
                    Ok(took) => out.push(format!("{what} took {took:?}, not within {within:?}")),
                    Err(e) => out.push(format!("{what} failed: {e}")),
                }
            }
            out
        };
        failures.extend(late(&self.probes.sos, SOS_STORED_WITHIN, "SOS stored"));
        failures.extend(late(
            &self.probes.dispatch,
            DISPATCH_DELIVERED_WITHIN,
            "dispatch delivered",
        ));
        if self.peaks.rss_max > RSS_BOUND || self.peaks.killed {
            failures.push(format!(
                "gateway RSS reached {} bytes, over the {RSS_BOUND}-byte bound",
                self.peaks.rss_max
            ));
        }
        if self.peaks.disk_growth() > DISK_BOUND {
            failures.push(format!(
                "data directory grew by {} bytes, over the {DISK_BOUND}-byte bound",
                self.peaks.disk_growth()
            ));
        }
        failures
    }

    /// Panics with the whole outcome unless every bound held.
    pub fn assert_unharmed(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "the attack did harm:\n  {}\n{self}",
            failures.join("\n  ")
        );
    }
}
