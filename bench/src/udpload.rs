//! The load that drives the raw UDP baseline relay: the same groups,
//! members, consoles and talk pattern as terminal-sim's `voice-steady`
//! (one talker at a time per group, rotating every burst), with plain UDP
//! sockets instead of QUIC connections.
//!
//! Each terminal is one UDP socket on loopback. Talkers stamp the send time
//! into the frame's payload; listeners count frames and record latency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ptt_codec::{GroupId, TerminalId, VoiceHeader};
use ptt_terminal_sim::report::{Latency, Percentiles};
use ptt_terminal_sim::scenario::Plan;
use tokio::net::UdpSocket;

/// What one baseline run measured at the terminals.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Frames the talkers sent during the measured phase.
    pub frames_sent: u64,
    /// Copies the listeners should have received.
    pub expected: u64,
    /// Copies they received.
    pub received: u64,
    /// Send to receive.
    pub latency: Percentiles,
}

/// A group that talks: its members (terminal and socket) in talking order,
/// and how many receive each frame.
type TalkingGroup = (GroupId, Vec<(TerminalId, Arc<UdpSocket>)>, u64);

/// Terminals per UDP socket, as terminal-sim shares a QUIC endpoint.
const TERMINALS_PER_SOCKET: usize = 256;

/// A 20 ms Opus frame at 16 kbit/s is about 40 bytes; the first 8 carry
/// the send time.
const PAYLOAD: usize = 40;

/// Talk pattern, as terminal-sim's `voice-steady`.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    /// Key held, ms.
    pub burst_ms: u64,
    /// Pause between bursts, ms.
    pub gap_ms: u64,
    /// Share of the groups that talk (the rest listen), chosen as
    /// terminal-sim chooses them.
    pub talk_share: f64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    expected: AtomicU64,
    received: AtomicU64,
}

/// Runs the load against the relay at `relay` for `duration` after the
/// joins, and returns what the listeners saw. `measure` is called when the
/// measured phase starts and ends (to sample the relay's CPU).
pub async fn run(
    relay: SocketAddr,
    plan: &Plan,
    pattern: Pattern,
    duration: Duration,
    mut measure: impl FnMut(),
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    // Terminals share sockets, as terminal-sim's share QUIC endpoints; each
    // joins its groups by id.
    let ids: Vec<TerminalId> = plan.terminals.keys().copied().collect();
    let mut sockets: Vec<Arc<UdpSocket>> = Vec::new();
    let mut socket_of: HashMap<TerminalId, Arc<UdpSocket>> = HashMap::new();
    for chunk in ids.chunks(TERMINALS_PER_SOCKET) {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        socket2::SockRef::from(&s).set_recv_buffer_size(4 * 1024 * 1024)?;
        s.connect(relay).await?;
        let s = Arc::new(s);
        for t in chunk {
            for g in &plan.terminals[t] {
                let mut join = vec![b'J'];
                join.extend_from_slice(&g.0.to_be_bytes());
                join.extend_from_slice(&t.0.to_be_bytes());
                s.send(&join).await?;
            }
            socket_of.insert(*t, s.clone());
        }
        sockets.push(s);
        // Pace the joins: the relay's socket buffer holds only so many.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Give the relay a moment to take the last joins.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Mutex::new(Latency::default()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for socket in &sockets {
        let (socket, counters, latency, measuring, mut stopped) = (
            socket.clone(),
            counters.clone(),
            latency.clone(),
            measuring.clone(),
            stopped.clone(),
        );
        tasks.spawn(async move {
            let mut buf = [0u8; 1500];
            let mut local = Latency::default();
            let mut n = 0u64;
            loop {
                let len = tokio::select! {
                    _ = stopped.changed() => break,
                    r = socket.recv(&mut buf) => match r {
                        Ok(len) => len,
                        Err(_) => break,
                    },
                };
                let Ok((_, payload)) = VoiceHeader::decode(&buf[..len]) else {
                    continue;
                };
                if !measuring.load(Ordering::Relaxed) || payload.len() < 8 {
                    continue;
                }
                let sent_ns = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                let now_ns = start.elapsed().as_nanos() as u64;
                local.record(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
                n += 1;
            }
            counters.received.fetch_add(n, Ordering::Relaxed);
            latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .merge(&local);
        });
    }
    let talkers: Vec<TalkingGroup> = plan
        .groups
        .iter()
        .enumerate()
        .filter(|(i, g)| {
            ptt_terminal_sim::scenario::talks(*i, pattern.talk_share) && !g.talkers.is_empty()
        })
        .map(|(_, g)| g)
        .map(|g| {
            (
                g.id,
                g.talkers
                    .iter()
                    .map(|t| (*t, socket_of[t].clone()))
                    .collect(),
                g.listeners.len().saturating_sub(1) as u64,
            )
        })
        .collect();
    let stop_at = Instant::now() + duration;
    measure();
    measuring.store(true, Ordering::Relaxed);
    let mut talking = tokio::task::JoinSet::new();
    for (i, (group, members, receivers)) in talkers.into_iter().enumerate() {
        let counters = counters.clone();
        talking.spawn(async move {
            // Stagger groups across the 20 ms frame time.
            tokio::time::sleep(Duration::from_micros((i as u64 * 997) % 20_000)).await;
            let cycle = pattern.burst_ms + pattern.gap_ms;
            let began = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut seq = 0u16;
            let mut buf = BytesMut::with_capacity(64);
            while Instant::now() < stop_at {
                tick.tick().await;
                let t = began.elapsed().as_millis() as u64;
                if t % cycle >= pattern.burst_ms {
                    continue;
                }
                let turn = (t / cycle) as usize;
                let (talker, socket) = &members[turn % members.len()];
                let mut payload = [0x5au8; PAYLOAD];
                payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
                buf.clear();
                VoiceHeader {
                    group,
                    // The baseline trusts this; the gateway authenticates.
                    speaker: talker.0,
                    burst: turn as u16,
                    seq,
                    flags: 0,
                }
                .encode(&payload, &mut buf);
                seq = seq.wrapping_add(1);
                if socket.send(&buf).await.is_ok() {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    counters.expected.fetch_add(receivers, Ordering::Relaxed);
                }
            }
        });
    }
    while talking.join_next().await.is_some() {}
    measure();
    // Frames in flight arrive within a few milliseconds on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    measuring.store(false, Ordering::Relaxed);
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    let percentiles = latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .percentiles();
    Ok(Measured {
        frames_sent: counters.sent.load(Ordering::Relaxed),
        expected: counters.expected.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
        latency: percentiles,
    })
}
