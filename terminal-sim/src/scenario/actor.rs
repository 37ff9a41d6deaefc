//! One simulated terminal: presses and releases the talk key when its
//! group's director says so, talks real Opus while it holds the floor, and
//! counts what floor control answered.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ptt_codec::{
    AlertBody, AlertKind, Class, ClientMsg, GroupId, ReceiptStatus, RevokeCause, ServerMsg, Target,
    TerminalId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

use super::churn::Backoff;
use super::listen::{RevokedTail, SendLog, REVOKED_TAIL};
use super::walk::Walker;
use crate::report::Latency;
use crate::terminal::{self, SeenAlerts, Terminal};

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
}

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
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
    /// Gateway address.
    pub gateway: SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// Its credential.
    pub credential: [u8; 32],
    /// Groups it joins on every connection.
    pub groups: Vec<GroupId>,
    /// Tells the terminal's voice listener about each new connection.
    pub connections: watch::Sender<quinn::Connection>,
    /// Where it walks, for members that report positions.
    pub walker: Option<Walker>,
}

/// Longest time a connection attempt may take to get a session: while the
/// gateway is down, a QUIC handshake would otherwise wait for its idle
/// timeout, and its Initial retransmissions back off further than the
/// reconnect schedule does. Twice the backoff step, at least this. Not
/// shorter: in a reconnect storm the gateway queues handshakes, and an
/// attempt abandoned at 2 s wastes the work both sides put in (measured:
/// 8,815 terminals back in 35 s with a 2 s limit, 18 s with 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time joining the groups may take once connected.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one terminal is doing with its alerts, for the reconnect loop.
struct Context<'a> {
    me: TerminalId,
    stats: &'a mut FloorStats,
    alerts: &'a mut AlertState,
    shared: &'a Shared,
    rng: &'a mut StdRng,
}

impl Context<'_> {
    /// Counts the alerts a closed terminal had taken in (and marked shown)
    /// but nobody had read: a redelivery would not be shown again.
    async fn drain(&mut self, terminal: &mut Terminal) {
        terminal.close();
        // After the close the terminal's readers end and its event channel
        // with them: one error reports the connection's end (messages may
        // still be queued behind it), then every read fails at once.
        let mut errors = 0;
        let limit = tokio::time::Instant::now() + Duration::from_secs(2);
        while errors < 3 {
            match tokio::time::timeout_at(limit, terminal.next_event()).await {
                Ok(Ok(ev)) => {
                    self.alerts
                        .on_message(&ev, self.me, self.stats, self.shared, self.rng);
                }
                Ok(Err(_)) => errors += 1,
                Err(_) => break,
            }
        }
    }
}

/// One connection attempt: connect with the shown-alerts memory, join the
/// groups. A terminal that connected but could not join is closed and its
/// alerts counted.
async fn connect_once(
    link: &Link,
    seen: SeenAlerts,
    handshake_timeout: Duration,
    cx: &mut Context<'_>,
) -> Result<Terminal, String> {
    let connect = Terminal::connect_with_config(
        &link.endpoint,
        link.client.clone(),
        link.gateway,
        &link.server_name,
        cx.me,
        &link.credential,
        seen,
    );
    let mut t = match tokio::time::timeout(handshake_timeout, connect).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no session within {handshake_timeout:?}")),
    };
    let joins = async {
        for g in &link.groups {
            t.join(*g).await?;
        }
        Ok::<_, terminal::Error>(())
    };
    let error = match tokio::time::timeout(JOIN_TIMEOUT, joins).await {
        Ok(Ok(())) => return Ok(t),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("joins took over {JOIN_TIMEOUT:?}"),
    };
    // The gateway may already have forwarded alerts to this session.
    cx.drain(&mut t).await;
    Err(error)
}

/// Reconnects with backoff until it works or the run stops (`None`).
async fn reconnect(
    link: &Link,
    seen: &SeenAlerts,
    stop: &mut watch::Receiver<bool>,
    cx: &mut Context<'_>,
    first_delay: bool,
) -> Option<Terminal> {
    let mut backoff = Backoff::default();
    let mut wait = first_delay;
    loop {
        if *stop.borrow() {
            return None;
        }
        if wait {
            let delay = backoff.next_delay(cx.rng);
            tokio::select! {
                _ = stop.changed() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        wait = true;
        // Not abandoned for `stop`: an attempt that got a session must
        // count what it was given; it ends within the timeouts.
        let handshake_timeout = HANDSHAKE_TIMEOUT.max(backoff.step() * 2);
        match connect_once(link, seen.clone(), handshake_timeout, cx).await {
            Ok(t) => {
                let _ = link.connections.send(t.connection().clone());
                return Some(t);
            }
            Err(e) => {
                cx.stats.failed_attempts += 1;
                tracing::debug!(terminal = %cx.me, "reconnect attempt failed: {e}");
            }
        }
    }
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

/// The alert side of one terminal: requests awaiting confirmation, alerts
/// shown, receipts due.
#[derive(Debug, Default)]
struct AlertState {
    /// Request id to the deliveries expected (`None`: the recipients the
    /// gateway names).
    requests: HashMap<u32, Option<u64>>,
    /// Alerts shown, to catch one shown twice.
    shown: HashSet<u64>,
    /// Receipts due: when, alert, status code.
    receipts: BinaryHeap<Reverse<(Instant, u64, u8)>>,
}

impl AlertState {
    /// Handles `msg` if it is about alerts; returns whether it was.
    fn on_message(
        &mut self,
        msg: &ServerMsg,
        me: TerminalId,
        stats: &mut FloorStats,
        shared: &Shared,
        rng: &mut StdRng,
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match msg {
            ServerMsg::AlertAccepted {
                request,
                alert,
                recipients,
                ..
            } => {
                if let Some(expected) = self.requests.remove(request) {
                    let expected = expected.unwrap_or(u64::from(*recipients));
                    stats.confirmed_ids.push(*alert);
                    stats.alerts_confirmed += 1;
                    stats.alerts_expected += expected;
                    shared.alerts_expected.fetch_add(expected, Relaxed);
                }
            }
            ServerMsg::AlertRefused {
                request,
                code,
                message,
                ..
            } => {
                self.requests.remove(request);
                tracing::warn!(terminal = %me, ?code, "alert refused: {message}");
            }
            ServerMsg::Alert {
                alert,
                created_ms,
                body,
                ..
            } => {
                let alert = *alert;
                if !self.shown.insert(alert) {
                    stats.alerts_duplicates_shown += 1;
                    return true;
                }
                stats.alerts_delivered += 1;
                let latency = Duration::from_millis(now_ms().saturating_sub(*created_ms));
                stats.delivered_ids.push((alert, latency));
                shared.alerts_delivered.fetch_add(1, Relaxed);
                if matches!(body.kind, AlertKind::Dispatch | AlertKind::Drill) {
                    let r = shared.responders;
                    let respond = Instant::now() + r.response.draw(r.respond_ms, rng);
                    let mut due = |at: Instant, status: ReceiptStatus| {
                        self.receipts.push(Reverse((at, alert, status.code())));
                    };
                    if rng.gen_bool(r.accept_ratio.clamp(0.0, 1.0)) {
                        due(respond, ReceiptStatus::Accepted);
                        let arrive = respond + r.response.draw(r.arrive_ms, rng);
                        due(arrive, ReceiptStatus::Arrived);
                    } else {
                        due(respond, ReceiptStatus::Rejected);
                    }
                }
            }
            _ => return false,
        }
        true
    }
}

/// Runs the terminal until `stop` turns true; returns its floor counters.
/// `done` is told the group whenever a burst of this terminal ends. When
/// the connection ends unexpectedly (a gateway restart), it reconnects with
/// backoff, joins its groups again and keeps the alerts it has shown.
pub async fn run(
    mut terminal: Terminal,
    mut link: Link,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    done: mpsc::UnboundedSender<GroupId>,
    mut stop: watch::Receiver<bool>,
) -> FloorStats {
    let me: TerminalId = terminal.id();
    let seen = terminal.seen_alerts();
    let mut stats = FloorStats::default();
    let mut pending: HashMap<GroupId, (Instant, Duration, bool)> = HashMap::new();
    let mut talking: Option<Talking> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let position_every = shared
        .position_every
        .filter(|_| link.walker.is_some())
        .unwrap_or(Duration::from_secs(3600));
    let mut position_tick = tokio::time::interval(position_every);
    position_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step = Instant::now();
    let mut packet = 0usize;
    let mut rng = StdRng::seed_from_u64(u64::from(me.0));
    let mut next_request = 1u32;
    let mut alerts = AlertState::default();
    let mut offline_at: Option<(tokio::time::Instant, Duration)> = None;
    let mut lost_at;
    loop {
        let exit = loop {
            let next_receipt = alerts.receipts.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                _ = stop.changed() => break Exit::Stop,
                _ = tokio::time::sleep_until(offline_at.map_or_else(tokio::time::Instant::now, |(at, _)| at)), if offline_at.is_some() => {
                    let (_, away) = offline_at.take().expect("guarded by the select condition");
                    break Exit::Offline(away);
                }
                _ = position_tick.tick(), if link.walker.is_some() && shared.position_every.is_some() => {
                    let walker = link.walker.as_mut().expect("guarded by the select condition");
                    let now = Instant::now();
                    walker.step(now.duration_since(last_step).as_secs_f64(), &mut rng);
                    last_step = now;
                    let (lat, lon) = walker.position_e7();
                    if terminal.report_position(lat, lon, 10).is_err() {
                        break Exit::Lost;
                    }
                    stats.positions += 1;
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_receipt.unwrap_or_else(Instant::now))), if next_receipt.is_some() => {
                    let Some(Reverse((at, alert, code))) = alerts.receipts.pop() else { continue };
                    let status = ReceiptStatus::from_code(code).unwrap_or(ReceiptStatus::Read);
                    let reason = if status == ReceiptStatus::Rejected { "在岗位上走不开".to_owned() } else { String::new() };
                    if terminal.send(ClientMsg::AlertReceipt { alert, status, reason }).is_err() {
                        // Sent again once reconnected.
                        alerts.receipts.push(Reverse((at, alert, code)));
                        break Exit::Lost;
                    }
                    let slot = match status { ReceiptStatus::Accepted => 0, ReceiptStatus::Rejected => 1, _ => 2 };
                    stats.receipts[slot] += 1;
                }
                cmd = commands.recv() => {
                    let cmd = match cmd {
                        None => break Exit::Stop,
                        Some(Command::Alert { target, body, expected }) => {
                            let request = next_request;
                            next_request = next_request.wrapping_add(1);
                            alerts.requests.insert(request, expected);
                            stats.alerts_created += 1;
                            if terminal.send(ClientMsg::AlertSend { request, body, target }).is_err() {
                                break Exit::Lost;
                            }
                            continue;
                        }
                        Some(Command::GoOffline { after, away }) => {
                            offline_at = Some((tokio::time::Instant::now() + after, away));
                            continue;
                        }
                        Some(Command::DrillReports { reply }) => {
                            let mut reports = Vec::new();
                            for alert in stats.confirmed_ids.clone() {
                                match terminal.drill_report(alert).await {
                                    Ok(json) => reports.push(json),
                                    Err(e) => tracing::warn!(alert, "no drill report: {e}"),
                                }
                            }
                            let _ = reply.send(reports);
                            continue;
                        }
                        Some(cmd) => cmd,
                    };
                    let Command::Press { group, class, hold } = cmd else { continue };
                    if talking.as_ref().is_some_and(|t| t.group == group) || pending.contains_key(&group) {
                        continue;
                    }
                    stats.requests += 1;
                    pending.insert(group, (Instant::now(), hold, false));
                    if terminal.send(ptt_codec::ClientMsg::FloorRequest { group, class }).is_err() {
                        break Exit::Lost;
                    }
                }
                ev = terminal.next_event() => {
                    let Ok(ev) = ev else { break Exit::Lost };
                    if alerts.on_message(&ev, me, &mut stats, &shared, &mut rng) {
                        continue;
                    }
                    match ev {
                        ServerMsg::FloorGranted { group, burst, .. } => {
                            stats.granted += 1;
                            let (asked, hold, queued) = pending.remove(&group).unwrap_or((Instant::now(), Duration::from_secs(1), true));
                            if !queued {
                                stats.grant_latency.record(asked.elapsed());
                            }
                            if talking.is_none() {
                                talking = Some(Talking { group, burst, seq: 0, until: Instant::now() + hold, tail: VecDeque::with_capacity(REVOKED_TAIL) });
                                ticker.reset_immediately();
                            } else {
                                // Already talking elsewhere: give this one back.
                                let _ = terminal.release(group);
                                let _ = done.send(group);
                            }
                        }
                        ServerMsg::FloorQueued { group, .. } => {
                            if let Some(p) = pending.get_mut(&group) {
                                if !p.2 {
                                    stats.queued += 1;
                                    p.2 = true;
                                }
                            }
                        }
                        ServerMsg::FloorDenied { group, .. } => {
                            stats.denied += 1;
                            pending.remove(&group);
                            let _ = done.send(group);
                        }
                        ServerMsg::FloorRevoked { group, cause, .. } => {
                            if cause == RevokeCause::Preempted { stats.preempted += 1 } else { stats.revoked += 1 }
                            if let Some(t) = talking.take_if(|t| t.group == group) {
                                stats.revoked_tails.push(RevokedTail { group, talker: me, burst: t.burst, frames: t.tail.into() });
                                let _ = done.send(group);
                            }
                        }
                        _ => {}
                    }
                }
                _ = ticker.tick(), if talking.is_some() => {
                    let t = talking.as_mut().expect("guarded by the select condition");
                    let now = Instant::now();
                    let end = now >= t.until;
                    let opus = &shared.packets[packet % shared.packets.len()];
                    packet += 1;
                    if let Some(log) = shared.logs.get(&t.group) {
                        log.sent(t.burst, t.seq, me, now);
                    }
                    if terminal.send_voice(t.group, t.burst, t.seq, opus, end).is_ok() {
                        let expected = shared.online.get(&t.group).copied().unwrap_or(1).saturating_sub(1);
                        stats.frames_sent += 1;
                        stats.frames_expected += expected;
                        if t.tail.len() == REVOKED_TAIL {
                            t.tail.pop_front();
                        }
                        t.tail.push_back((t.seq, expected));
                    }
                    t.seq = t.seq.wrapping_add(1);
                    if end {
                        let group = t.group;
                        talking = None;
                        // Release one frame time after the END frame, so the
                        // release cannot overtake the last datagram at the gateway.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = terminal.release(group);
                        let _ = done.send(group);
                    }
                }
            }
        };
        let away = match exit {
            Exit::Stop => break,
            Exit::Lost => {
                lost_at = Instant::now();
                stats.connection_losses += 1;
                tracing::info!(terminal = %me, "connection lost, reconnecting");
                None
            }
            Exit::Offline(away) => {
                lost_at = Instant::now();
                stats.simulated_drops += 1;
                Some(away)
            }
        };
        // What the terminal library took in before the connection ended
        // (and marked shown) but this loop had not read yet still counts.
        Context {
            me,
            stats: &mut stats,
            alerts: &mut alerts,
            shared: &shared,
            rng: &mut rng,
        }
        .drain(&mut terminal)
        .await;
        // Whatever this connection was doing on the floor is over.
        for group in pending
            .drain()
            .map(|(g, _)| g)
            .chain(talking.take().map(|t| t.group))
        {
            let _ = done.send(group);
        }
        if let Some(away) = away {
            tokio::select! {
                _ = stop.changed() => {
                    stats.offline_at_end = true;
                    return stats;
                }
                _ = tokio::time::sleep(away) => {}
            }
        }
        let lost = away.is_none();
        // Every request not yet confirmed is lost with the connection:
        // the console cannot know whether it was stored.
        alerts.requests.clear();
        let mut cx = Context {
            me,
            stats: &mut stats,
            alerts: &mut alerts,
            shared: &shared,
            rng: &mut rng,
        };
        match reconnect(&link, &seen, &mut stop, &mut cx, lost).await {
            Some(t) => {
                terminal = t;
                if lost {
                    stats.reconnects += 1;
                    stats.reconnect_time.record(lost_at.elapsed());
                } else {
                    stats.drop_to_back.record(lost_at.elapsed());
                    shared
                        .back_after_drop
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                position_tick.reset_immediately();
            }
            None => {
                stats.offline_at_end = true;
                return stats;
            }
        }
    }
    if let Some(t) = talking {
        let _ = terminal.release(t.group);
    }
    terminal.close();
    stats
}
