//! The reconnect-storm director: every terminal drops at once, and the run
//! measures how fast the gateway takes them all back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use tokio::sync::mpsc;

use super::{actor, RunConfig, LOG};
use crate::report::{Latency, ReconnectReport};

/// How a reconnect storm went.
#[derive(Debug, Clone, Copy)]
pub(super) struct Storm {
    /// Terminals dropped.
    terminals: u64,
    /// Terminals back online with their groups joined.
    back: u64,
    /// From the drop until the last one was back (or the wait ended).
    duration: Duration,
}

impl Storm {
    /// The report's reconnect section, given each terminal's drop to back
    /// as the actors measured it.
    pub(super) fn report(&self, drop_to_back: &Latency) -> ReconnectReport {
        ReconnectReport {
            terminals: self.terminals,
            back: self.back,
            duration_s: self.duration.as_secs_f64(),
            handshakes_per_s: self.back as f64 / self.duration.as_secs_f64().max(1e-3),
            drop_to_back_ms: drop_to_back.percentiles(),
        }
    }
}

/// Waits `gap_ms`, drops every terminal at the same instant and waits (up
/// to `drain_ms`) until all are back. Call once every actor runs, as the
/// reconnect-storm pattern's director.
pub(super) async fn direct(
    config: &RunConfig,
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    shared: &actor::Shared,
) -> Storm {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::time::sleep(Duration::from_millis(config.spec.gap_ms)).await;
    let terminals = commands.len() as u64;
    tracing::info!(target: LOG, terminals, "dropping every connection at once");
    let dropped = Instant::now();
    for tx in commands.values() {
        let _ = tx.send(actor::Command::GoOffline {
            after: Duration::ZERO,
            away: Duration::ZERO,
        });
    }
    let limit = dropped + Duration::from_millis(config.spec.drain_ms);
    let progress = indicatif::ProgressBar::new(terminals).with_style(
        indicatif::ProgressStyle::with_template("reconnecting {bar:40} {pos}/{len} {per_sec}")
            .expect("valid template"),
    );
    loop {
        let back = shared.back_after_drop.load(Relaxed);
        progress.set_position(back);
        if back >= terminals || Instant::now() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish_and_clear();
    let back = shared.back_after_drop.load(Relaxed);
    let duration = dropped.elapsed();
    tracing::info!(target: LOG, back, terminals, "reconnect storm over in {duration:?}");
    Storm {
        terminals,
        back,
        duration,
    }
}
