//! One simulated terminal: presses and releases the talk key when its
//! group's director says so, talks real Opus while it holds the floor, and
//! counts what floor control answered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ptt_codec::{Class, GroupId, RevokeCause, ServerMsg, TerminalId};
use tokio::sync::{mpsc, watch};

use super::listen::SendLog;
use crate::report::Latency;
use crate::terminal::Terminal;

/// What a director tells a terminal.
#[derive(Debug, Clone, Copy)]
pub enum Command {
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
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            cmd = commands.recv() => {
                let Some(Command::Press { group, class, hold }) = cmd else { break };
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
