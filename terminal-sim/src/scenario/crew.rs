//! The running terminals: one actor and one voice listener per connected
//! terminal, and the handles the directors and the tally use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ptt_codec::{GroupId, TerminalId};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::listen::{self, Heard, SendLog};
use super::ramp::Fleet;
use super::tally::Totals;
use super::{actor, unit_site, walk, Audio, Commands, Plan, RunConfig};
use crate::report::ConnectionReport;
use crate::terminal::{self, Terminal};
use crate::wan::Loss;

/// Every connected terminal at work: its actor, its voice listener, and the
/// channels that direct and stop them. Lives until the report is built:
/// dropping a command channel ends its actor.
#[derive(Debug)]
pub(super) struct Crew {
    /// Each online terminal's actor, for the directors.
    pub(super) commands: Commands,
    /// The group of every burst that ended, for the voice director.
    pub(super) done: mpsc::UnboundedReceiver<GroupId>,
    /// What every actor reads, and the run-wide counters the directors wait
    /// on; its send logs are complete once every listener is done.
    pub(super) shared: Arc<actor::Shared>,
    /// The actors, each returning its counters.
    actors: JoinSet<actor::FloorStats>,
    /// The voice listeners, each returning what it heard.
    listeners: JoinSet<anyhow::Result<Heard>>,
    /// Turns true to stop actors and listeners.
    stop: watch::Sender<bool>,
}

impl Crew {
    /// Starts an actor and a voice listener for each `connected` terminal,
    /// on its shard. Call once the ramp is over and presence has settled:
    /// voice delivery over time is counted in seconds from here.
    pub(super) fn start(
        config: &RunConfig,
        plan: &Plan,
        fleet: &Fleet,
        connected: HashMap<TerminalId, Terminal>,
        audio: Audio,
    ) -> Crew {
        let logs: Arc<HashMap<GroupId, Arc<SendLog>>> =
            Arc::new(plan.groups.iter().map(|g| (g.id, Arc::default())).collect());
        let shared = Arc::new(shared(
            config,
            plan,
            &connected,
            audio.packets,
            logs.clone(),
        ));
        let mut walk_rng = StdRng::seed_from_u64(config.seed ^ 0x5745_4c4b);
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::unbounded_channel::<GroupId>();
        let mut crew = Crew {
            commands: HashMap::new(),
            done,
            shared,
            actors: JoinSet::new(),
            listeners: JoinSet::new(),
            stop,
        };
        // Delivery over time is counted in seconds from here: every terminal
        // is connected.
        let epoch = Instant::now();
        let recorders = plan.recorders();
        for (id, t) in connected {
            let groups = plan.terminals[&id].clone();
            let downlink = Downlink {
                loss: Loss::for_terminal(config.loss_percent, config.seed, id.0),
                record: recordings(config, &recorders, id),
                playout: config.playout(),
                source: audio.source.clone(),
            };
            let (conn_tx, conn_rx) = watch::channel(t.voice_receiver());
            let shard = fleet.shard(id);
            crew.listeners.spawn_on(
                listen_loop(
                    conn_rx,
                    groups.clone(),
                    logs.clone(),
                    downlink,
                    stop_rx.clone(),
                    epoch,
                ),
                shard,
            );
            let walker = walker(config, plan, &crew.shared, id, &mut walk_rng);
            let link = actor::Link {
                endpoint: fleet.endpoint(id).clone(),
                client: fleet.client(id).clone(),
                gateways: config.gateways.order_for(id),
                server_name: config.server_name.clone(),
                credential: plan.credential(id),
                groups,
                connections: conn_tx,
                walker,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            crew.commands.insert(id, tx);
            let actor = actor::run(
                t,
                link,
                crew.shared.clone(),
                rx,
                done_tx.clone(),
                stop_rx.clone(),
            );
            crew.actors.spawn_on(actor, shard);
        }
        crew
    }

    /// Tells every actor and listener to stop. Call once the workload is
    /// over and its last frames had time to arrive.
    pub(super) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for every actor to end and sums their counters onto the ramp's
    /// `connections`. Call after [`Crew::stop`].
    pub(super) async fn totals(&mut self, connections: ConnectionReport) -> anyhow::Result<Totals> {
        let mut totals = Totals::new(connections);
        while let Some(r) = self.actors.join_next().await {
            totals.add(r?);
        }
        totals.log();
        Ok(totals)
    }

    /// Waits for every listener to end and merges what they heard. Call
    /// after [`Crew::stop`]; a listener that failed (a recording it could
    /// not write) fails the run.
    pub(super) async fn heard(&mut self) -> anyhow::Result<Heard> {
        let mut heard = Heard::default();
        while let Some(r) = self.listeners.join_next().await {
            let h = r??;
            heard.merge(&h);
        }
        Ok(heard)
    }
}

/// The inputs every actor shares: the audio, the send logs, who is online
/// in each group, how people answer alerts, and the run-wide counters.
fn shared(
    config: &RunConfig,
    plan: &Plan,
    connected: &HashMap<TerminalId, Terminal>,
    packets: Arc<Vec<Bytes>>,
    logs: Arc<HashMap<GroupId, Arc<SendLog>>>,
) -> actor::Shared {
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
    actor::Shared {
        packets,
        logs,
        online,
        responders: actor::Responders {
            accept_ratio: config.spec.accept_ratio,
            respond_ms: config.spec.respond_ms,
            arrive_ms: config.spec.arrive_ms,
            response: config.spec.response,
            read_ms: config.spec.read_ms,
        },
        alerts_expected: Default::default(),
        alerts_delivered: Default::default(),
        position_every: (config.spec.position_ms > 0)
            .then(|| Duration::from_millis(config.spec.position_ms)),
        position_spread: config.spec.position_spread,
        back_after_drop: Default::default(),
    }
}

/// The WAV files `id` records, one per group it is the recorder of; none
/// without a record directory.
fn recordings(
    config: &RunConfig,
    recorders: &[(GroupId, TerminalId)],
    id: TerminalId,
) -> Vec<(GroupId, PathBuf)> {
    match &config.record_dir {
        Some(dir) => recorders
            .iter()
            .filter(|(_, r)| *r == id)
            .map(|(g, _)| (*g, dir.join(format!("group-{}-terminal-{}.wav", g.0, id.0))))
            .collect(),
        None => Vec::new(),
    }
}

/// Where `id` walks, if it reports positions: members (not consoles) do
/// when the scenario asks for positions, around their unit's site, on a
/// patrol loop when the scenario says so. Draws from `rng` only for those.
fn walker(
    config: &RunConfig,
    plan: &Plan,
    shared: &actor::Shared,
    id: TerminalId,
    rng: &mut StdRng,
) -> Option<walk::Mover> {
    match plan.org.terminal(id) {
        Some(member) if shared.position_every.is_some() && !member.is_console() => {
            let (site, radius, speed) = (
                unit_site(&plan.org, member.node),
                config.spec.walk_radius_m,
                config.spec.speed_mps,
            );
            Some(if config.spec.patrol {
                walk::Mover::Patrol(walk::Patrol::new(site, radius, speed, rng))
            } else {
                walk::Mover::Walk(walk::Walker::new(site, radius, speed, rng))
            })
        }
        _ => None,
    }
}

/// What happens to a terminal's voice after the gateway delivered it: the
/// simulated loss on its downlink, and the groups it records.
struct Downlink {
    /// Drops voice frames before playout (`--loss`).
    loss: Loss,
    /// The WAV files to record, per group.
    record: Vec<(GroupId, PathBuf)>,
    /// The recorders' jitter buffer settings.
    playout: crate::jitter::Config,
    /// What the talkers said, to score the recordings against.
    source: Arc<Vec<i16>>,
}

/// Reads a terminal's voice datagrams until stopped, checking each, and
/// writing the recorded groups' audio to WAV; once stopped, scores the
/// recordings.
async fn listen_loop(
    mut connections: watch::Receiver<terminal::VoiceReceiver>,
    groups: Vec<GroupId>,
    logs: Arc<HashMap<GroupId, Arc<SendLog>>>,
    downlink: Downlink,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
) -> anyhow::Result<Heard> {
    let Downlink {
        mut loss,
        record,
        playout: jitter,
        source,
    } = downlink;
    let mut listener = listen::Listener::new(&groups, logs).since(epoch);
    let mut recorders = record
        .into_iter()
        .map(|(g, path)| {
            let r = crate::record::Recorder::create(&path, jitter.clone(), Some(source.clone()))?;
            Ok((g, (r, 0u64)))
        })
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let mut playout = tokio::time::interval(Duration::from_millis(20));
    let mut conn = connections.borrow_and_update().clone();
    loop {
        tokio::select! {
            // Frames before playout: after a stall of this thread, the
            // frames already queued are buffered before anything due is
            // played, rather than concealed and then found late.
            biased;
            _ = stop.changed() => break,
            // The terminal reconnected: listen on the new connection.
            c = connections.changed() => {
                if c.is_err() {
                    break;
                }
                conn = connections.borrow_and_update().clone();
            }
            // Voice as QUIC DATAGRAMs or SRTP, in the DATAGRAM form.
            d = conn.recv() => {
                let Ok(voice) = d else {
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
                let header = voice.header;
                listener.on_frame(&voice, now);
                if loss.drops() {
                    listener.heard.lost_simulated += 1;
                    if let Some((_, lost)) = recorders.get_mut(&header.group) {
                        *lost += 1;
                    }
                    continue;
                }
                if let Some((r, _)) = recorders.get_mut(&header.group) {
                    r.push(now, &voice);
                }
            }
            _ = playout.tick(), if !recorders.is_empty() => {
                let now = Instant::now();
                for (r, _) in recorders.values_mut() {
                    r.play(now)?;
                }
            }
        }
    }
    let mut heard = listener.heard;
    for (group, (r, lost)) in recorders {
        // Scoring holds this shard's thread a while; the run is over.
        let recording = r.finish()?;
        heard.recordings.push((group, lost, recording));
    }
    Ok(heard)
}
