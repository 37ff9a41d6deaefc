//! One simulated terminal: presses and releases the talk key when its
//! group's director says so, talks real Opus while it holds the floor, and
//! counts what floor control answered.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
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
use super::listen::SendLog;
use super::walk::Walker;
use crate::report::Latency;
use crate::terminal::{self, SeenAlerts, Terminal};

/// What a director tells a terminal.
#[derive(Debug, Clone)]
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
    /// Gateway creation to terminal receipt.
    pub alert_latency: Latency,
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
    /// Ids of the alerts this terminal received.
    pub delivered_ids: Vec<u64>,
}

/// How simulated people answer dispatch alerts.
#[derive(Debug, Clone, Copy)]
pub struct Responders {
    /// Share who accept (the others reject).
    pub accept_ratio: f64,
    /// Delay before accepting or rejecting, uniform in 0..this.
    pub respond_ms: u64,
    /// Further delay until "arrived", uniform in 0..this.
    pub arrive_ms: u64,
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
}

/// How one terminal reaches the gateway again, and what it does there.
#[derive(Debug)]
pub struct Link {
    /// The client endpoint it connects from.
    pub endpoint: quinn::Endpoint,
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

/// Longest time one connection attempt (handshake and joins) may take:
/// while the gateway is down, a QUIC handshake would otherwise wait for
/// its idle timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// One connection attempt: connect with the shown-alerts memory, join the
/// groups.
async fn connect_once(link: &Link, id: TerminalId, seen: SeenAlerts) -> Result<Terminal, String> {
    let attempt = async {
        let mut t = Terminal::connect_with_seen(
            &link.endpoint,
            link.gateway,
            &link.server_name,
            id,
            &link.credential,
            seen,
        )
        .await?;
        for g in &link.groups {
            t.join(*g).await?;
        }
        Ok::<_, terminal::Error>(t)
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no session within {ATTEMPT_TIMEOUT:?}")),
    }
}

/// Reconnects with backoff until it works or the run stops (`None`).
async fn reconnect(
    link: &Link,
    id: TerminalId,
    seen: &SeenAlerts,
    stop: &mut watch::Receiver<bool>,
    rng: &mut StdRng,
    stats: &mut FloorStats,
    first_delay: bool,
) -> Option<Terminal> {
    let mut backoff = Backoff::default();
    let mut wait = first_delay;
    loop {
        if *stop.borrow() {
            return None;
        }
        if wait {
            let delay = backoff.next_delay(rng);
            tokio::select! {
                _ = stop.changed() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        wait = true;
        tokio::select! {
            _ = stop.changed() => return None,
            r = connect_once(link, id, seen.clone()) => match r {
                Ok(t) => {
                    let _ = link.connections.send(t.connection().clone());
                    return Some(t);
                }
                Err(e) => {
                    stats.failed_attempts += 1;
                    tracing::debug!(terminal = %id, "reconnect attempt failed: {e}");
                }
            },
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
    let mut alert_requests: HashMap<u32, Option<u64>> = HashMap::new();
    let mut next_request = 1u32;
    let mut shown: HashSet<u64> = HashSet::new();
    let mut receipts: BinaryHeap<Reverse<(Instant, u64, u8)>> = BinaryHeap::new();
    let mut offline_at: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let exit = loop {
            let next_receipt = receipts.peek().map(|Reverse((at, _, _))| *at);
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
                    let Some(Reverse((at, alert, code))) = receipts.pop() else { continue };
                    let status = ReceiptStatus::from_code(code).unwrap_or(ReceiptStatus::Read);
                    let reason = if status == ReceiptStatus::Rejected { "在岗位上走不开".to_owned() } else { String::new() };
                    if terminal.send(ClientMsg::AlertReceipt { alert, status, reason }).is_err() {
                        // Sent again once reconnected.
                        receipts.push(Reverse((at, alert, code)));
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
                            alert_requests.insert(request, expected);
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
                    match ev {
                        ServerMsg::FloorGranted { group, burst, .. } => {
                            stats.granted += 1;
                            let (asked, hold, queued) = pending.remove(&group).unwrap_or((Instant::now(), Duration::from_secs(1), true));
                            if !queued {
                                stats.grant_latency.record(asked.elapsed());
                            }
                            if talking.is_none() {
                                talking = Some(Talking { group, burst, seq: 0, until: Instant::now() + hold });
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
                        ServerMsg::AlertAccepted { request, alert, recipients, .. } => {
                            if let Some(expected) = alert_requests.remove(&request) {
                                stats.confirmed_ids.push(alert);
                                let expected = expected.unwrap_or(u64::from(recipients));
                                stats.alerts_confirmed += 1;
                                stats.alerts_expected += expected;
                                shared.alerts_expected.fetch_add(expected, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        ServerMsg::AlertRefused { request, code, message } => {
                            alert_requests.remove(&request);
                            tracing::warn!(terminal = %me, ?code, "alert refused: {message}");
                        }
                        ServerMsg::Alert { alert, created_ms, body, .. } => {
                            if !shown.insert(alert) {
                                stats.alerts_duplicates_shown += 1;
                                continue;
                            }
                            stats.alerts_delivered += 1;
                            stats.delivered_ids.push(alert);
                            shared.alerts_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            stats.alert_latency.record(Duration::from_millis(now_ms().saturating_sub(created_ms)));
                            if matches!(body.kind, AlertKind::Dispatch | AlertKind::Drill) {
                                let r = shared.responders;
                                let respond = Instant::now() + Duration::from_millis(rng.gen_range(0..=r.respond_ms));
                                if rng.gen_bool(r.accept_ratio.clamp(0.0, 1.0)) {
                                    receipts.push(Reverse((respond, alert, ReceiptStatus::Accepted.code())));
                                    let arrive = respond + Duration::from_millis(rng.gen_range(0..=r.arrive_ms));
                                    receipts.push(Reverse((arrive, alert, ReceiptStatus::Arrived.code())));
                                } else {
                                    receipts.push(Reverse((respond, alert, ReceiptStatus::Rejected.code())));
                                }
                            }
                        }
                        ServerMsg::FloorRevoked { group, cause, .. } => {
                            if cause == RevokeCause::Preempted { stats.preempted += 1 } else { stats.revoked += 1 }
                            if talking.as_ref().is_some_and(|t| t.group == group) {
                                talking = None;
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
                        stats.frames_sent += 1;
                        stats.frames_expected += shared.online.get(&t.group).copied().unwrap_or(1).saturating_sub(1);
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
        let lost = match exit {
            Exit::Stop => break,
            Exit::Lost => {
                stats.connection_losses += 1;
                terminal.close();
                tracing::info!(terminal = %me, "connection lost, reconnecting");
                true
            }
            Exit::Offline(away) => {
                stats.simulated_drops += 1;
                terminal.close();
                tokio::select! {
                    _ = stop.changed() => {
                        stats.offline_at_end = true;
                        return stats;
                    }
                    _ = tokio::time::sleep(away) => {}
                }
                false
            }
        };
        // Whatever this connection was doing on the floor is over.
        for group in pending
            .drain()
            .map(|(g, _)| g)
            .chain(talking.take().map(|t| t.group))
        {
            let _ = done.send(group);
        }
        // Every request not yet confirmed is lost with the connection:
        // the console cannot know whether it was stored.
        alert_requests.clear();
        match reconnect(&link, me, &seen, &mut stop, &mut rng, &mut stats, lost).await {
            Some(t) => {
                terminal = t;
                if lost {
                    stats.reconnects += 1;
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
