//! One simulated terminal: presses and releases the talk key when its
//! group's director says so, talks real Opus while it holds the floor, and
//! counts what floor control answered.

mod alerts;
mod reconnect;

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ptt_codec::{
    AlertBody, Class, ClientMsg, GroupId, ReceiptStatus, RevokeCause, ServerMsg, Target, TerminalId,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

use super::listen::{RevokedTail, SendLog, REVOKED_TAIL};
use super::walk::Mover;
use crate::report::Latency;
use crate::terminal::{SeenAlerts, Terminal};
use alerts::AlertState;
use reconnect::{reconnect, Context};

/// The target of the actors' log events, whichever of their files logs
/// them.
const LOG: &str = module_path!();

/// What a director tells a terminal.
#[derive(Debug)]
pub enum Command {
    /// Send an alert (consoles).
    Alert {
        /// Who gets it.
        target: Target,
        /// What it says.
        body: AlertBody,
        /// Recipients the harness has online; `None`: as many as the
        /// gateway's `AlertAccepted` names (a nearest target picks only
        /// members online).
        expected: Option<u64>,
    },
    /// Drop offline `after` from now: close the connection, stay away for
    /// `away`, then reconnect with the same shown-alerts memory.
    GoOffline {
        /// Delay before dropping.
        after: Duration,
        /// Time offline.
        away: Duration,
    },
    /// Ask the gateway for the report of every drill this terminal started
    /// and the gateway confirmed; reply with the JSON documents.
    DrillReports {
        /// Where the reports go.
        reply: tokio::sync::oneshot::Sender<Vec<String>>,
    },
    /// Press the talk key in `group` with `class`, and talk for `hold` once
    /// granted.
    Press {
        /// The group.
        group: GroupId,
        /// Request class.
        class: Class,
        /// How long to talk once granted.
        hold: Duration,
    },
    /// Raise an SOS (members): talk into the emergency floor the gateway
    /// grants for [`SOS_TALK`], and cancel the SOS `cancel_after` from now
    /// unless a console cancelled it first. Ignored while one is raised.
    Sos {
        /// When the raiser gives up waiting for a console.
        cancel_after: Duration,
    },
}

/// How long an SOS raiser talks into the hot mic the gateway opens (its
/// default hot-mic burst is 10 s).
pub const SOS_TALK: Duration = Duration::from_secs(8);

/// Reasons simulated people give for rejecting a task.
const REJECT_REASONS: [&str; 4] = [
    "在岗位上走不开",
    "正在处理另一起警情",
    "距离太远，已转告同事",
    "对讲机电量不足",
];

/// Floor counters of one terminal.
#[derive(Debug, Default)]
pub struct FloorStats {
    /// Presses.
    pub requests: u64,
    /// Grants.
    pub granted: u64,
    /// Queued answers.
    pub queued: u64,
    /// Denials.
    pub denied: u64,
    /// Pre-emptions.
    pub preempted: u64,
    /// Other revocations.
    pub revoked: u64,
    /// Frames sent while holding the floor.
    pub frames_sent: u64,
    /// Deliveries expected for those frames.
    pub frames_expected: u64,
    /// Bursts whose floor was revoked while talking, with their last frames.
    pub revoked_tails: Vec<RevokedTail>,
    /// Request-to-grant latency, for grants without queueing.
    pub grant_latency: Latency,
    /// Alerts this terminal sent.
    pub alerts_created: u64,
    /// Of those, confirmed by the gateway.
    pub alerts_confirmed: u64,
    /// Deliveries expected for the confirmed ones (online recipients).
    pub alerts_expected: u64,
    /// Alerts this terminal received.
    pub alerts_delivered: u64,
    /// Alerts shown to the user more than once (must be 0).
    pub alerts_duplicates_shown: u64,
    /// Receipts sent: accepted, rejected, arrived.
    pub receipts: [u64; 3],
    /// Connections that ended unexpectedly (gateway restart, network).
    pub connection_losses: u64,
    /// Reconnections after such a loss.
    pub reconnects: u64,
    /// Times the scenario sent this terminal offline (each followed by a
    /// reconnect).
    pub simulated_drops: u64,
    /// Connection attempts that failed while reconnecting.
    pub failed_attempts: u64,
    /// Whether the terminal was still offline when the run ended.
    pub offline_at_end: bool,
    /// Positions reported.
    pub positions: u64,
    /// Ids of the alerts this terminal sent that the gateway confirmed.
    pub confirmed_ids: Vec<u64>,
    /// Ids of the alerts this terminal received, with the time from their
    /// creation at the gateway.
    pub delivered_ids: Vec<(u64, Duration)>,
    /// Connection lost to session back with its groups joined.
    pub reconnect_time: Latency,
    /// Simulated drop to session back with its groups joined.
    pub drop_to_back: Latency,
    /// Reconnections after a lost connection that landed on another node
    /// than the lost one (runs with several gateway addresses).
    pub failovers: u64,
    /// For those: connection lost (noticed) to session back on the other
    /// node with its groups joined.
    pub failover_time: Latency,
    /// The form its voice travelled in at the end of the run (`None`: it
    /// was offline).
    pub media_form: Option<crate::terminal::MediaForm>,
    /// Its last connection's SRTP counters.
    pub media: crate::terminal::MediaStats,
}

/// How simulated people answer dispatch alerts.
#[derive(Debug, Clone, Copy)]
pub struct Responders {
    /// Share who accept (the others reject).
    pub accept_ratio: f64,
    /// Delay before accepting or rejecting, drawn per `response`.
    pub respond_ms: u64,
    /// Further delay until "arrived", drawn per `response`.
    pub arrive_ms: u64,
    /// How delays are drawn.
    pub response: super::spec::Response,
    /// Delay before marking any alert read, drawn per `response`; 0: no
    /// read receipts (accepting or rejecting then counts from delivery).
    pub read_ms: u64,
}

/// Shared, read-only inputs of every actor.
#[derive(Debug)]
pub struct Shared {
    /// Opus packets to send in a loop.
    pub packets: Arc<Vec<Bytes>>,
    /// Send logs per group.
    pub logs: Arc<HashMap<GroupId, Arc<SendLog>>>,
    /// Listeners online per group, the talker included.
    pub online: HashMap<GroupId, u64>,
    /// How people answer dispatches.
    pub responders: Responders,
    /// Deliveries expected for confirmed alerts, run-wide (the director
    /// waits for them).
    pub alerts_expected: std::sync::atomic::AtomicU64,
    /// Alerts received, run-wide.
    pub alerts_delivered: std::sync::atomic::AtomicU64,
    /// How often members report their position (`None`: never).
    pub position_every: Option<Duration>,
    /// Each member's period is `position_every` times a factor drawn once
    /// from 1 - this up to 1 + this.
    pub position_spread: f64,
    /// Terminals back online after a simulated drop, run-wide (the
    /// reconnect-storm director waits for them).
    pub back_after_drop: std::sync::atomic::AtomicU64,
}

/// How one terminal reaches the gateway again, and what it does there.
#[derive(Debug)]
pub struct Link {
    /// The client endpoint it connects from.
    pub endpoint: quinn::Endpoint,
    /// Its own client configuration (its TLS session tickets).
    pub client: quinn::ClientConfig,
    /// The gateway's addresses in this terminal's order
    /// ([`crate::terminal::Gateways::order_for`]): it starts on the first
    /// and fails over to the next.
    pub gateways: Vec<SocketAddr>,
    /// TLS server name.
    pub server_name: String,
    /// Its credential.
    pub credential: [u8; 32],
    /// Groups it joins on every connection.
    pub groups: Vec<GroupId>,
    /// Tells the terminal's voice listener about each new connection.
    pub connections: watch::Sender<crate::terminal::VoiceReceiver>,
    /// Where it walks, for members that report positions.
    pub walker: Option<Mover>,
}

/// Why the event loop of one connection ended.
enum Exit {
    /// The run is over.
    Stop,
    /// The connection ended unexpectedly.
    Lost,
    /// The scenario sends the terminal offline for this long.
    Offline(Duration),
}

struct Talking {
    group: GroupId,
    burst: u16,
    seq: u16,
    until: Instant,
    /// The last frames sent (seq, deliveries expected), in case the floor
    /// is revoked: see [`RevokedTail`].
    tail: VecDeque<(u16, u64)>,
}

/// Runs the terminal until `stop` turns true; returns its floor counters.
/// `done` is told the group whenever a burst of this terminal ends. When
/// the connection ends unexpectedly (a gateway restart), it reconnects with
/// backoff, joins its groups again and keeps the alerts it has shown.
pub async fn run(
    mut terminal: Terminal,
    link: Link,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    done: mpsc::UnboundedSender<GroupId>,
    mut stop: watch::Receiver<bool>,
) -> FloorStats {
    let me: TerminalId = terminal.id();
    let seen = terminal.seen_alerts();
    let mut actor = Actor::new(me, link, shared, done);
    // The ramp connected it to its home node, or the next one that answered.
    let at = terminal.connection().remote_address();
    actor.node = actor
        .link
        .gateways
        .iter()
        .position(|a| *a == at)
        .unwrap_or(0);
    loop {
        let (away, lost_at) = match actor.serve(&mut terminal, &mut commands, &mut stop).await {
            Exit::Stop => break,
            Exit::Lost => {
                actor.stats.connection_losses += 1;
                tracing::info!(terminal = %me, "connection lost, reconnecting");
                (None, Instant::now())
            }
            Exit::Offline(away) => {
                actor.stats.simulated_drops += 1;
                (Some(away), Instant::now())
            }
        };
        actor.wind_down(&mut terminal).await;
        match actor.come_back(away, lost_at, &seen, &mut stop).await {
            Some(t) => terminal = t,
            None => return actor.stats,
        }
    }
    if let Some(t) = actor.talking {
        let _ = terminal.release(t.group);
    }
    actor.stats.media_form = Some(terminal.media());
    actor.stats.media = terminal.media_stats();
    terminal.close();
    actor.stats
}

/// One terminal's state across its connections: what it does on the floor
/// and with its alerts, and its counters.
struct Actor {
    /// The terminal.
    me: TerminalId,
    /// How it reaches the gateway again, and where it walks.
    link: Link,
    /// The run's shared inputs and counters.
    shared: Arc<Shared>,
    /// Told the group whenever a burst of this terminal ends.
    done: mpsc::UnboundedSender<GroupId>,
    /// Its counters, returned at the end.
    stats: FloorStats,
    /// Floor requests awaiting an answer: when asked, how long to talk once
    /// granted, whether queued.
    pending: HashMap<GroupId, (Instant, Duration, bool)>,
    /// The burst it is sending.
    talking: Option<Talking>,
    /// One voice frame every 20 ms while talking.
    ticker: tokio::time::Interval,
    /// Position reports (every hour when it reports none).
    position_tick: tokio::time::Interval,
    /// When its walker last stepped.
    last_step: Instant,
    /// The next Opus packet to send.
    packet: usize,
    /// Its own random choices: responses, walking, backoff.
    rng: StdRng,
    /// Request id of its next alert.
    next_request: u32,
    /// Its alerts.
    alerts: AlertState,
    /// When the scenario sends it offline, and for how long.
    offline_at: Option<(tokio::time::Instant, Duration)>,
    /// Its SOS, while raised.
    sos: Option<Sos>,
    /// Index in `link.gateways` of the node it is (or was last) on.
    node: usize,
}

/// An SOS this terminal raised and nobody cancelled yet.
#[derive(Debug)]
struct Sos {
    /// Its alert id, once the gateway confirmed it.
    alert: Option<u64>,
    /// When the raiser cancels it itself.
    cancel_at: tokio::time::Instant,
}

impl Actor {
    /// Call once, with the terminal connected.
    fn new(
        me: TerminalId,
        link: Link,
        shared: Arc<Shared>,
        done: mpsc::UnboundedSender<GroupId>,
    ) -> Actor {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut rng = StdRng::seed_from_u64(u64::from(me.0));
        let spread = shared.position_spread.clamp(0.0, 0.99);
        let position_every = shared
            .position_every
            .filter(|_| link.walker.is_some())
            .map(|every| {
                if spread > 0.0 {
                    every.mul_f64(rand::Rng::gen_range(&mut rng, 1.0 - spread..=1.0 + spread))
                } else {
                    every
                }
            })
            .unwrap_or(Duration::from_secs(3600));
        let mut position_tick = tokio::time::interval(position_every);
        position_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Actor {
            me,
            link,
            shared,
            done,
            stats: FloorStats::default(),
            pending: HashMap::new(),
            talking: None,
            ticker,
            position_tick,
            last_step: Instant::now(),
            packet: 0,
            rng,
            next_request: 1,
            alerts: AlertState::default(),
            offline_at: None,
            sos: None,
            node: 0,
        }
    }

    /// Serves one connection: follows commands, answers the gateway, talks,
    /// reports positions and sends receipts when due, until the run stops,
    /// the connection ends, or the scenario sends the terminal offline.
    async fn serve(
        &mut self,
        terminal: &mut Terminal,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: &mut watch::Receiver<bool>,
    ) -> Exit {
        loop {
            let next_receipt = self.alerts.receipts.peek().map(|Reverse((at, _, _))| *at);
            let sos_cancel = self.sos.as_ref().map(|s| s.cancel_at);
            let flow = tokio::select! {
                _ = tokio::time::sleep_until(sos_cancel.unwrap_or_else(tokio::time::Instant::now)), if sos_cancel.is_some() => {
                    self.cancel_sos(terminal)
                }
                _ = stop.changed() => return Exit::Stop,
                _ = tokio::time::sleep_until(self.offline_at.map_or_else(tokio::time::Instant::now, |(at, _)| at)), if self.offline_at.is_some() => {
                    let (_, away) = self.offline_at.take().expect("guarded by the select condition");
                    return Exit::Offline(away);
                }
                _ = self.position_tick.tick(), if self.link.walker.is_some() && self.shared.position_every.is_some() => {
                    self.report_position(terminal)
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_receipt.unwrap_or_else(Instant::now))), if next_receipt.is_some() => {
                    self.send_receipt(terminal)
                }
                cmd = commands.recv() => match cmd {
                    None => return Exit::Stop,
                    Some(cmd) => self.on_command(cmd, terminal).await,
                },
                ev = terminal.next_event() => match ev {
                    Ok(ev) => self.on_event(ev, terminal),
                    Err(_) => return Exit::Lost,
                },
                _ = self.ticker.tick(), if self.talking.is_some() => self.send_frame(terminal).await,
            };
            if let ControlFlow::Break(exit) = flow {
                return exit;
            }
        }
    }

    /// Steps the walker and reports where it is. Call on the position tick
    /// of a terminal with a walker.
    fn report_position(&mut self, terminal: &mut Terminal) -> ControlFlow<Exit> {
        let walker = self
            .link
            .walker
            .as_mut()
            .expect("guarded by the select condition");
        let now = Instant::now();
        walker.step(
            now.duration_since(self.last_step).as_secs_f64(),
            &mut self.rng,
        );
        self.last_step = now;
        let (lat, lon) = walker.position_e7();
        if terminal.report_position(lat, lon, 10).is_err() {
            return ControlFlow::Break(Exit::Lost);
        }
        self.stats.positions += 1;
        ControlFlow::Continue(())
    }

    /// Sends the receipt due first. Call when it is due; one the connection
    /// could not take is sent again once reconnected.
    fn send_receipt(&mut self, terminal: &mut Terminal) -> ControlFlow<Exit> {
        let Some(Reverse((at, alert, code))) = self.alerts.receipts.pop() else {
            return ControlFlow::Continue(());
        };
        let status = ReceiptStatus::from_code(code).unwrap_or(ReceiptStatus::Read);
        let reason = if status == ReceiptStatus::Rejected {
            REJECT_REASONS[(alert % REJECT_REASONS.len() as u64) as usize].to_owned()
        } else {
            String::new()
        };
        if terminal
            .send(ClientMsg::AlertReceipt {
                alert,
                status,
                reason,
            })
            .is_err()
        {
            // Sent again once reconnected.
            self.alerts.receipts.push(Reverse((at, alert, code)));
            return ControlFlow::Break(Exit::Lost);
        }
        let slot = match status {
            ReceiptStatus::Accepted => 0,
            ReceiptStatus::Rejected => 1,
            ReceiptStatus::Arrived => 2,
            _ => return ControlFlow::Continue(()),
        };
        self.stats.receipts[slot] += 1;
        ControlFlow::Continue(())
    }

    /// Cancels this terminal's own SOS. Call when its time is up and no
    /// console cancelled it.
    fn cancel_sos(&mut self, terminal: &mut Terminal) -> ControlFlow<Exit> {
        self.sos = None;
        tracing::info!(target: LOG, terminal = %self.me, "SOS cancelled by its raiser");
        if terminal
            .send(ClientMsg::SosCancel { terminal: self.me })
            .is_err()
        {
            return ControlFlow::Break(Exit::Lost);
        }
        ControlFlow::Continue(())
    }

    /// Follows a director's command.
    async fn on_command(&mut self, cmd: Command, terminal: &mut Terminal) -> ControlFlow<Exit> {
        match cmd {
            Command::Alert {
                target,
                body,
                expected,
            } => {
                let request = self.next_request;
                self.next_request = self.next_request.wrapping_add(1);
                self.alerts.requests.insert(request, expected);
                self.stats.alerts_created += 1;
                if terminal
                    .send(ClientMsg::AlertSend {
                        request,
                        body,
                        target,
                    })
                    .is_err()
                {
                    return ControlFlow::Break(Exit::Lost);
                }
            }
            Command::GoOffline { after, away } => {
                self.offline_at = Some((tokio::time::Instant::now() + after, away));
            }
            Command::DrillReports { reply } => {
                let mut reports = Vec::new();
                for alert in self.stats.confirmed_ids.clone() {
                    match terminal.drill_report(alert).await {
                        Ok(json) => reports.push(json),
                        Err(e) => tracing::warn!(alert, "no drill report: {e}"),
                    }
                }
                let _ = reply.send(reports);
            }
            Command::Sos { cancel_after } => {
                let Some(unit) = self.link.groups.first().copied() else {
                    return ControlFlow::Continue(());
                };
                if self.sos.is_some() {
                    return ControlFlow::Continue(());
                }
                self.sos = Some(Sos {
                    alert: None,
                    cancel_at: tokio::time::Instant::now() + cancel_after,
                });
                // The gateway grants the unit's floor for the hot mic: talk
                // into it like a member calling for help.
                self.pending
                    .insert(unit, (Instant::now(), SOS_TALK.min(cancel_after), true));
                if terminal.send(ClientMsg::Sos).is_err() {
                    return ControlFlow::Break(Exit::Lost);
                }
            }
            Command::Press { group, class, hold } => {
                if self.talking.as_ref().is_some_and(|t| t.group == group)
                    || self.pending.contains_key(&group)
                {
                    return ControlFlow::Continue(());
                }
                self.stats.requests += 1;
                self.pending.insert(group, (Instant::now(), hold, false));
                if terminal
                    .send(ptt_codec::ClientMsg::FloorRequest { group, class })
                    .is_err()
                {
                    return ControlFlow::Break(Exit::Lost);
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Handles a message from the gateway: alerts, and floor answers.
    fn on_event(&mut self, ev: ServerMsg, terminal: &mut Terminal) -> ControlFlow<Exit> {
        let me = self.me;
        match (&ev, self.sos.as_mut()) {
            (
                ServerMsg::AlertAccepted {
                    request: 0, alert, ..
                },
                Some(sos),
            ) => {
                sos.alert = Some(*alert);
                return ControlFlow::Continue(());
            }
            (ServerMsg::AlertCancelled { alert, by }, Some(sos)) if sos.alert == Some(*alert) => {
                tracing::info!(target: LOG, terminal = %me, by = %by, "SOS cancelled");
                self.sos = None;
                return ControlFlow::Continue(());
            }
            _ => {}
        }
        if self
            .alerts
            .on_message(&ev, me, &mut self.stats, &self.shared, &mut self.rng)
        {
            return ControlFlow::Continue(());
        }
        let stats = &mut self.stats;
        match ev {
            ServerMsg::FloorGranted { group, burst, .. } => {
                stats.granted += 1;
                let (asked, hold, queued) = self.pending.remove(&group).unwrap_or((
                    Instant::now(),
                    Duration::from_secs(1),
                    true,
                ));
                if !queued {
                    stats.grant_latency.record(asked.elapsed());
                }
                if self.talking.is_none() {
                    self.talking = Some(Talking {
                        group,
                        burst,
                        seq: 0,
                        until: Instant::now() + hold,
                        tail: VecDeque::with_capacity(REVOKED_TAIL),
                    });
                    self.ticker.reset_immediately();
                } else {
                    // Already talking elsewhere: give this one back.
                    let _ = terminal.release(group);
                    let _ = self.done.send(group);
                }
            }
            ServerMsg::FloorQueued { group, .. } => {
                if let Some(p) = self.pending.get_mut(&group) {
                    if !p.2 {
                        stats.queued += 1;
                        p.2 = true;
                    }
                }
            }
            ServerMsg::FloorDenied { group, .. } => {
                stats.denied += 1;
                self.pending.remove(&group);
                let _ = self.done.send(group);
            }
            ServerMsg::FloorRevoked { group, cause, .. } => {
                if cause == RevokeCause::Preempted {
                    stats.preempted += 1
                } else {
                    stats.revoked += 1
                }
                if let Some(t) = self.talking.take_if(|t| t.group == group) {
                    stats.revoked_tails.push(RevokedTail {
                        group,
                        talker: me,
                        burst: t.burst,
                        frames: t.tail.into(),
                    });
                    let _ = self.done.send(group);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// Sends the next voice frame of the burst; the last one ends it and
    /// releases the floor. Call on the ticker while talking.
    async fn send_frame(&mut self, terminal: &mut Terminal) -> ControlFlow<Exit> {
        let t = self
            .talking
            .as_mut()
            .expect("guarded by the select condition");
        let now = Instant::now();
        let end = now >= t.until;
        let opus = &self.shared.packets[self.packet % self.shared.packets.len()];
        self.packet += 1;
        if let Some(log) = self.shared.logs.get(&t.group) {
            log.sent(t.burst, t.seq, self.me, now);
        }
        if terminal
            .send_voice(t.group, t.burst, t.seq, opus, end)
            .is_ok()
        {
            let expected = self
                .shared
                .online
                .get(&t.group)
                .copied()
                .unwrap_or(1)
                .saturating_sub(1);
            self.stats.frames_sent += 1;
            self.stats.frames_expected += expected;
            if t.tail.len() == REVOKED_TAIL {
                t.tail.pop_front();
            }
            t.tail.push_back((t.seq, expected));
        }
        t.seq = t.seq.wrapping_add(1);
        if end {
            let group = t.group;
            self.talking = None;
            // Release one frame time after the END frame, so the
            // release cannot overtake the last datagram at the gateway.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = terminal.release(group);
            let _ = self.done.send(group);
        }
        ControlFlow::Continue(())
    }

    /// Ends what a closed connection was doing. Call once per connection
    /// that ended other than by the run's stop.
    async fn wind_down(&mut self, terminal: &mut Terminal) {
        // What the terminal library took in before the connection ended
        // (and marked shown) but this loop had not read yet still counts.
        Context {
            node: &mut self.node,
            me: self.me,
            stats: &mut self.stats,
            alerts: &mut self.alerts,
            shared: &self.shared,
            rng: &mut self.rng,
        }
        .drain(terminal)
        .await;
        // Whatever this connection was doing on the floor is over.
        for group in self
            .pending
            .drain()
            .map(|(g, _)| g)
            .chain(self.talking.take().map(|t| t.group))
        {
            let _ = self.done.send(group);
        }
    }

    /// Stays `away` (a simulated drop) or not at all (a lost connection),
    /// then reconnects with backoff. Call after [`Actor::wind_down`];
    /// `lost_at` is when the connection ended. `None`: the run stopped
    /// first, and the terminal counts as offline at the end.
    async fn come_back(
        &mut self,
        away: Option<Duration>,
        lost_at: Instant,
        seen: &SeenAlerts,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Terminal> {
        if let Some(away) = away {
            tokio::select! {
                _ = stop.changed() => {
                    self.stats.offline_at_end = true;
                    return None;
                }
                _ = tokio::time::sleep(away) => {}
            }
        }
        let lost = away.is_none();
        // Every request not yet confirmed is lost with the connection:
        // the console cannot know whether it was stored.
        self.alerts.requests.clear();
        let lost_node = self.node;
        let mut cx = Context {
            node: &mut self.node,
            me: self.me,
            stats: &mut self.stats,
            alerts: &mut self.alerts,
            shared: &self.shared,
            rng: &mut self.rng,
        };
        let Some(terminal) = reconnect(&self.link, seen, stop, &mut cx, lost).await else {
            self.stats.offline_at_end = true;
            return None;
        };
        if lost {
            self.stats.reconnects += 1;
            self.stats.reconnect_time.record(lost_at.elapsed());
            if self.node != lost_node {
                self.stats.failovers += 1;
                self.stats.failover_time.record(lost_at.elapsed());
            }
        } else {
            self.stats.drop_to_back.record(lost_at.elapsed());
            self.shared
                .back_after_drop
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.position_tick.reset_immediately();
        Some(terminal)
    }
}
