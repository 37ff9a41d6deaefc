//! Coming back: one connection attempt with its timeouts, reconnecting with
//! backoff, and counting what a closed connection had taken in.

use std::time::Duration;

use ptt_codec::TerminalId;
use rand::rngs::StdRng;
use tokio::sync::watch;

use super::alerts::AlertState;
use super::{FloorStats, Link, Shared, LOG};
use crate::terminal::{self, Backoff, SeenAlerts, Terminal};

/// Longest time a connection attempt may take to get a session: while the
/// gateway is down, a QUIC handshake would otherwise wait for its idle
/// timeout, and its Initial retransmissions back off further than the
/// reconnect schedule does. Twice the backoff ceiling, at least this. Not
/// shorter: in a reconnect storm the gateway queues handshakes, and an
/// attempt abandoned at 2 s wastes the work both sides put in (measured:
/// 8,815 terminals back in 35 s with a 2 s limit, 18 s with 10 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time joining the groups may take once connected.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one terminal is doing with its alerts, for the reconnect loop.
pub(super) struct Context<'a> {
    /// Index in the link's gateways of the node it is (or was last) on.
    pub(super) node: &'a mut usize,
    /// The terminal.
    pub(super) me: TerminalId,
    /// Its counters.
    pub(super) stats: &'a mut FloorStats,
    /// Its alerts.
    pub(super) alerts: &'a mut AlertState,
    /// The run's shared inputs and counters.
    pub(super) shared: &'a Shared,
    /// Its random choices (the backoff's jitter).
    pub(super) rng: &'a mut StdRng,
}

impl Context<'_> {
    /// Counts the alerts a closed terminal had taken in (and marked shown)
    /// but nobody had read: a redelivery would not be shown again.
    pub(super) async fn drain(&mut self, terminal: &mut Terminal) {
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
) -> Result<Terminal, Failed> {
    let connect = Terminal::connect_with_config(
        &link.endpoint,
        link.client.clone(),
        link.gateways[*cx.node],
        &link.server_name,
        cx.me,
        &link.credential,
        seen,
    );
    let mut t = match tokio::time::timeout(handshake_timeout, connect).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) if e.is_final() => return Err(Failed::Final(e.to_string())),
        Ok(Err(e)) => return Err(Failed::Retry(e.to_string())),
        Err(_) => {
            return Err(Failed::Retry(format!(
                "no session within {handshake_timeout:?}"
            )))
        }
    };
    let joins = async {
        for g in &link.groups {
            t.join(*g).await?;
        }
        Ok::<_, terminal::Error>(())
    };
    let error = match tokio::time::timeout(JOIN_TIMEOUT, joins).await {
        Ok(Ok(())) => return Ok(t),
        Ok(Err(e)) if e.is_final() => Failed::Final(e.to_string()),
        Ok(Err(e)) => Failed::Retry(e.to_string()),
        Err(_) => Failed::Retry(format!("joins took over {JOIN_TIMEOUT:?}")),
    };
    // The gateway may already have forwarded alerts to this session.
    cx.drain(&mut t).await;
    Err(error)
}

/// Why a connection attempt failed.
enum Failed {
    /// Worth another attempt after the backoff.
    Retry(String),
    /// Retrying cannot help (the credential was revoked or refused): the
    /// terminal stays offline for the rest of the run.
    Final(String),
}

/// First ceiling of the harness's reconnect delays.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Highest ceiling of the harness's reconnect delays: 2 s, not the
/// library's 5 s, so that a reconnect storm of one gateway's terminals is
/// over sooner (the gateway's admission queue, not the terminals' patience,
/// paces it).
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Reconnects with backoff until it works or the run stops (`None`); also
/// `None` when retrying cannot help ([`terminal::Error::is_final`]: a
/// revoked or refused credential). After a lost connection (`lost`) the
/// first attempt waits a backoff delay and goes to the next node of the
/// terminal's order, as [`terminal::Failover::reconnect`] does; a failed
/// attempt moves on to the next node too. A terminal back from a simulated
/// drop tries its node again first. With one gateway address, every
/// attempt goes to it.
pub(super) async fn reconnect(
    link: &Link,
    seen: &SeenAlerts,
    stop: &mut watch::Receiver<bool>,
    cx: &mut Context<'_>,
    lost: bool,
) -> Option<Terminal> {
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    let mut wait = lost;
    let nodes = link.gateways.len();
    if lost {
        *cx.node = (*cx.node + 1) % nodes;
    }
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
        let handshake_timeout = HANDSHAKE_TIMEOUT.max(backoff.ceiling() * 2);
        match connect_once(link, seen.clone(), handshake_timeout, cx).await {
            Ok(t) => {
                let _ = link.connections.send(t.voice_receiver());
                return Some(t);
            }
            Err(Failed::Retry(e)) => {
                cx.stats.failed_attempts += 1;
                *cx.node = (*cx.node + 1) % nodes;
                tracing::debug!(target: LOG, terminal = %cx.me, "reconnect attempt failed: {e}");
            }
            Err(Failed::Final(e)) => {
                // A revoked (or refused) credential: retrying forever would
                // only load the gateway. Stop as if the run had.
                cx.stats.failed_attempts += 1;
                tracing::warn!(target: LOG, terminal = %cx.me, "not reconnecting: {e}");
                return None;
            }
        }
    }
}
