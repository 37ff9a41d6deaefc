//! The alert side of one terminal: confirmations of the alerts it sent,
//! alerts shown (once), and the receipts its simulated user sends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use ptt_codec::{AlertKind, ReceiptStatus, ServerMsg, TerminalId};
use rand::rngs::StdRng;
use rand::Rng;

use super::{FloorStats, Shared, LOG};

/// The alert side of one terminal: requests awaiting confirmation, alerts
/// shown, receipts due.
#[derive(Debug, Default)]
pub(super) struct AlertState {
    /// Request id to the deliveries expected (`None`: the recipients the
    /// gateway names).
    pub(super) requests: HashMap<u32, Option<u64>>,
    /// Alerts shown, to catch one shown twice.
    pub(super) shown: HashSet<u64>,
    /// Receipts due: when, alert, status code.
    pub(super) receipts: BinaryHeap<Reverse<(Instant, u64, u8)>>,
}

impl AlertState {
    /// Handles `msg` if it is about alerts; returns whether it was.
    pub(super) fn on_message(
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
                tracing::warn!(target: LOG, terminal = %me, ?code, "alert refused: {message}");
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
                let r = shared.responders;
                let mut seen_at = Instant::now();
                if r.read_ms > 0 {
                    seen_at += r.response.draw(r.read_ms, rng);
                    self.receipts
                        .push(Reverse((seen_at, alert, ReceiptStatus::Read.code())));
                }
                if matches!(body.kind, AlertKind::Dispatch | AlertKind::Drill) {
                    let respond = seen_at + r.response.draw(r.respond_ms, rng);
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

/// Wall-clock milliseconds since the Unix epoch, as the gateway stamps
/// alerts.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
