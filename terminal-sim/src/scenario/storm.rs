//! The reconnect-storm director: every terminal drops at once, and the run
//! measures how fast the gateway takes them all back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ptt_codec::TerminalId;
use tokio::sync::mpsc;

use super::{actor, RunConfig};

/// Drops every terminal at the same instant and waits (up to `drain_ms`)
/// until all are back: returns how many dropped, how many came back, and
/// how long until the last one did.
pub(super) async fn reconnect_storm(
    config: &RunConfig,
    commands: &HashMap<TerminalId, mpsc::UnboundedSender<actor::Command>>,
    shared: &actor::Shared,
) -> (u64, u64, Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::time::sleep(Duration::from_millis(config.spec.gap_ms)).await;
    let terminals = commands.len() as u64;
    tracing::info!(terminals, "dropping every connection at once");
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
    tracing::info!(back, terminals, "reconnect storm over in {duration:?}");
    (terminals, back, duration)
}
