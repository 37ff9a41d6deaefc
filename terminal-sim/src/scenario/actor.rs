//! One simulated terminal: presses and releases the talk key when its
//! group's director says so, talks real Opus while it holds the floor, and
//! counts what floor control answered.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
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

use super::listen::SendLog;
use crate::report::Latency;
use crate::terminal::Terminal;

/// What a director tells a terminal.
#[derive(Debug, Clone)]
pub enum Command {
    /// Send an alert (consoles); `expected` recipients are online.
    Alert {
        /// Who gets it.
        target: Target,
        /// What it says.
        body: AlertBody,
        /// Recipients the harness has online.
        expected: u64,
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
}

struct Talking {
    group: GroupId,
    burst: u16,
    seq: u16,
    until: Instant,
}

/// Runs the terminal until `stop` turns true; returns its floor counters.
/// `done` is told the group whenever a burst of this terminal ends.
pub async fn run(
    mut terminal: Terminal,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    done: mpsc::UnboundedSender<GroupId>,
    mut stop: watch::Receiver<bool>,
) -> FloorStats {
    let me: TerminalId = terminal.id();
    let mut stats = FloorStats::default();
    let mut pending: HashMap<GroupId, (Instant, Duration, bool)> = HashMap::new();
    let mut talking: Option<Talking> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut packet = 0usize;
    let mut rng = StdRng::seed_from_u64(u64::from(me.0));
    let mut alert_requests: HashMap<u32, u64> = HashMap::new();
    let mut next_request = 1u32;
    let mut shown: HashSet<u64> = HashSet::new();
    let mut receipts: BinaryHeap<Reverse<(Instant, u64, u8)>> = BinaryHeap::new();
    loop {
        let next_receipt = receipts.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_receipt.unwrap_or_else(Instant::now))), if next_receipt.is_some() => {
                let Some(Reverse((_, alert, code))) = receipts.pop() else { continue };
                let status = ReceiptStatus::from_code(code).unwrap_or(ReceiptStatus::Read);
                let slot = match status { ReceiptStatus::Accepted => 0, ReceiptStatus::Rejected => 1, _ => 2 };
                stats.receipts[slot] += 1;
                let reason = if status == ReceiptStatus::Rejected { "在岗位上走不开".to_owned() } else { String::new() };
                if terminal.send(ClientMsg::AlertReceipt { alert, status, reason }).is_err() {
                    break;
                }
            }
            cmd = commands.recv() => {
                let cmd = match cmd {
                    None => break,
                    Some(Command::Alert { target, body, expected }) => {
                        let request = next_request;
                        next_request = next_request.wrapping_add(1);
                        alert_requests.insert(request, expected);
                        stats.alerts_created += 1;
                        if terminal.send(ClientMsg::AlertSend { request, body, target }).is_err() {
                            break;
                        }
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
                    break;
                }
            }
            ev = terminal.next_event() => {
                let Ok(ev) = ev else { break };
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
                    ServerMsg::AlertAccepted { request, .. } => {
                        if let Some(expected) = alert_requests.remove(&request) {
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
    }
    if let Some(t) = talking {
        let _ = terminal.release(t.group);
    }
    terminal.close();
    stats
}
