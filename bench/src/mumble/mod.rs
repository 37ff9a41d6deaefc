//! `ptt-bench --peer mumble`: the same plan as the gateway's and the
//! baseline's (groups, talkers, listeners, talk pattern, 20 ms frames)
//! driven through Debian's murmurd over Mumble's own protocol: a TLS
//! control channel per client, voice as OCB2-AES128 encrypted UDP.
//!
//! Mumble 1.3 puts a user in one channel, so each group is a channel and
//! each (listener, group) pair of the plan is one client: a station
//! console that monitors three units is three clients. Deliveries per
//! frame are the plan's (a group's listeners less the talker).

mod client;
mod control;
mod crypt;
mod ocb2;
pub mod server;
mod tls;
mod varint;
mod voice;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ptt_terminal_sim::scenario::Plan;

use crate::udpload::{Measured, Pattern};

/// Clients logging in at once: murmur serialises logins (each is
/// broadcast to everyone), more in flight only queue there.
const CONNECTING: usize = 16;
/// A 20 ms Opus frame at 16 kbit/s is about 40 bytes (as the baseline's);
/// the first 8 carry the send time.
const PAYLOAD: usize = 40;

/// How the clients of a run are laid out.
#[derive(Debug, Clone)]
struct Layout {
    /// Channel name of each group, in plan order.
    channels: Vec<String>,
    /// Client name and its group's index, one per (listener, group).
    clients: Vec<(String, usize)>,
    /// Per group: indexes into `clients` of its talkers, and the copies
    /// each frame should reach.
    talkers: Vec<(Vec<usize>, u64)>,
}

fn layout(plan: &Plan, pattern: Pattern) -> Layout {
    let mut out = Layout {
        channels: Vec::new(),
        clients: Vec::new(),
        talkers: Vec::new(),
    };
    for (i, g) in plan.groups.iter().enumerate() {
        out.channels.push(format!("g{}", g.id.0));
        let mut index = HashMap::new();
        for t in &g.listeners {
            index.insert(*t, out.clients.len());
            out.clients.push((format!("t{}-g{}", t.0, g.id.0), i));
        }
        if ptt_terminal_sim::scenario::talks(i, pattern.talk_share) && !g.talkers.is_empty() {
            out.talkers.push((
                g.talkers
                    .iter()
                    .filter_map(|t| index.get(t).copied())
                    .collect(),
                g.listeners.len().saturating_sub(1) as u64,
            ));
        }
    }
    out
}

/// Clients a plan needs: murmurd's `users` must allow them all.
pub fn clients(plan: &Plan) -> usize {
    plan.groups.iter().map(|g| g.listeners.len()).sum()
}

/// What a run measured beyond [`Measured`].
#[derive(Debug, Clone)]
pub struct Extra {
    /// Clients connected.
    pub clients: usize,
    /// Seconds from the first login to the last client's UDP up.
    pub connect_seconds: f64,
    /// Voice messages murmur tunnelled over TCP (0, or the run fails).
    pub tunnelled: u64,
    /// UDP datagrams refused by the clients (decrypt or parse).
    pub refused: u64,
    /// Control connections murmur closed during the run.
    pub dropped: u64,
}

/// Runs the plan against the murmurd at `server` (SuperUser's `password`
/// creates the channels) for `duration` after every client is up;
/// `measure` is called when the measured phase starts and ends.
pub async fn run(
    server: SocketAddr,
    password: &str,
    plan: &Plan,
    pattern: Pattern,
    duration: Duration,
    mut measure: impl FnMut(),
) -> anyhow::Result<(Measured, Extra)> {
    let layout = layout(plan, pattern);
    let tls = tls::connector()?;
    let mut admin = client::login(server, &tls, "SuperUser", Some(password))
        .await
        .context("SuperUser login")?;
    admin.create_channels(&layout.channels).await?;
    let channels = admin.channels.clone();
    drop(admin);

    let shared = Arc::new(client::Shared::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let began = Instant::now();
    let total = layout.clients.len();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut connecting = tokio::task::JoinSet::new();
    for (i, (name, group)) in layout.clients.iter().cloned().enumerate() {
        let channel = *channels
            .get(&layout.channels[group])
            .expect("create_channels returned once every channel was announced");
        let (tls, gate, shared, stopped) =
            (tls.clone(), gate.clone(), shared.clone(), stopped.clone());
        connecting.spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let mut tasks = tokio::task::JoinSet::new();
            let mut login = client::login(server, &tls, &name, None)
                .await
                .with_context(|| format!("{name}: login"))?;
            login
                .join(channel)
                .await
                .with_context(|| format!("{name}: join"))?;
            let talker = login.start(server, shared, stopped, &mut tasks).await?;
            anyhow::Ok((i, talker, tasks))
        });
    }
    let mut talkers: Vec<Option<client::Talker>> = vec![None; total];
    let mut tasks = Vec::with_capacity(total);
    let mut last_report = Instant::now();
    while let Some(r) = connecting.join_next().await {
        let (i, talker, t) = r.context("client setup task")??;
        talkers[i] = Some(talker);
        tasks.push(t);
        if last_report.elapsed() > Duration::from_secs(5) || tasks.len() == total {
            last_report = Instant::now();
            eprintln!(
                "mumble: {}/{total} clients up ({:.0} s)",
                tasks.len(),
                began.elapsed().as_secs_f64()
            );
        }
    }
    let connect_seconds = began.elapsed().as_secs_f64();
    let talkers: Vec<client::Talker> = talkers
        .into_iter()
        .map(|t| t.expect("every setup task returned its client"))
        .collect();
    // Let the last joins' broadcasts drain before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (sent, expected) = (
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let stop_at = Instant::now() + duration;
    measure();
    shared.measuring.store(true, Ordering::Relaxed);
    let mut talking = tokio::task::JoinSet::new();
    for (i, (members, receivers)) in layout.talkers.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let members: Vec<client::Talker> = members.iter().map(|m| talkers[*m].clone()).collect();
        let (receivers, sent, expected, start) =
            (*receivers, sent.clone(), expected.clone(), shared.start);
        talking.spawn(async move {
            // Stagger groups across the 20 ms frame time, as the baseline.
            tokio::time::sleep(Duration::from_micros((i as u64 * 997) % 20_000)).await;
            let cycle = pattern.burst_ms + pattern.gap_ms;
            let began = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sequence = 0u64;
            while Instant::now() < stop_at {
                tick.tick().await;
                let t = began.elapsed().as_millis() as u64;
                if t % cycle >= pattern.burst_ms {
                    continue;
                }
                let turn = (t / cycle) as usize;
                let last = (t + 20) % cycle >= pattern.burst_ms;
                let mut payload = [0x5au8; PAYLOAD];
                payload[..8].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_be_bytes());
                if members[turn % members.len()]
                    .talk(sequence, last, &payload)
                    .await
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                    expected.fetch_add(receivers, Ordering::Relaxed);
                }
                sequence += 1;
            }
        });
    }
    while talking.join_next().await.is_some() {}
    measure();
    // Frames in flight arrive within a few milliseconds on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let _ = stop.send(true);
    for mut t in tasks {
        while t.join_next().await.is_some() {}
    }
    let latency = shared
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .percentiles();
    let extra = Extra {
        clients: total,
        connect_seconds,
        tunnelled: shared.tunnelled.load(Ordering::Relaxed),
        refused: shared.refused.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
    };
    if extra.tunnelled > 0 {
        bail!(
            "murmur tunnelled {} voice messages over TCP: some clients' UDP was not up, the figures would not be UDP's",
            extra.tunnelled
        );
    }
    Ok((
        Measured {
            frames_sent: sent.load(Ordering::Relaxed),
            expected: expected.load(Ordering::Relaxed),
            received: shared.received.load(Ordering::Relaxed),
            latency,
        },
        extra,
    ))
}
