//! The alert desk: the store, the window of deliveries in flight, the
//! terminals that may have alerts waiting, and the receipt writer's queue.

use std::sync::{Arc, Mutex};

use dashmap::{DashMap, DashSet};
use ptt_codec::{ErrorCode, TerminalId};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::warn;
use crate::store::{self, Receipt, ReceiptIn, Store};

/// Alert deliveries in flight at once (see [`Desk::delivery_slot`]).
const MAX_DELIVERIES_IN_FLIGHT: usize = 512;

/// Of those, the most that routine deliveries (store-and-forward backlog,
/// notices, reports) may hold: a quarter of the window is always left for
/// live SOS and dispatch.
const MAX_ROUTINE_IN_FLIGHT: usize = MAX_DELIVERIES_IN_FLIGHT * 3 / 4;

/// Receipts written in one transaction at most.
const RECEIPT_BATCH: usize = 4096;

/// Why a call to the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The blocking task running the call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The receipt writer is gone (the gateway is shutting down) or failed
    /// the batch; the receipt was not stored.
    #[error("receipt writer dropped the receipt")]
    ReceiptDropped,
}

impl Error {
    /// The stable wire code for a terminal whose request failed this way:
    /// the store's refusals keep their own codes, everything else is the
    /// gateway's fault.
    pub(crate) fn to_code(&self) -> ErrorCode {
        match self {
            Error::Store(e) => e.to_code(),
            Error::Task(_) | Error::ReceiptDropped => ErrorCode::Internal,
        }
    }
}

/// A receipt waiting for the writer, and where to send what it did.
#[derive(Debug)]
pub(crate) struct QueuedReceipt {
    /// The receipt to record.
    receipt: ReceiptIn,
    /// Told what recording it did, once it is on disk.
    reply: oneshot::Sender<Result<Receipt, store::Error>>,
}

/// A receipt queued for the writer; await [`Pending::stored`] for its
/// outcome.
#[derive(Debug)]
pub(crate) struct Pending(Option<oneshot::Receiver<Result<Receipt, store::Error>>>);

impl Pending {
    /// What recording the receipt did, once it is on disk.
    pub(crate) async fn stored(self) -> Result<Receipt, Error> {
        let answer = self.0.ok_or(Error::ReceiptDropped)?;
        Ok(answer.await.map_err(|_| Error::ReceiptDropped)??)
    }
}

/// Which share of the delivery window a delivery may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// A live SOS or dispatch: the whole window.
    Urgent,
    /// Everything else (store-and-forward backlog, notices, reports): the
    /// routine share, so it never holds the last places an SOS needs.
    Routine,
}

/// A place in the window of alert deliveries in flight (see
/// [`Desk::delivery_slot`]); given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    _shared: SemaphorePermit<'a>,
    _routine: Option<SemaphorePermit<'a>>,
    _own: OwnedSemaphorePermit,
}

/// Alerts and receipts on disk, and the queues in front of them.
#[derive(Debug)]
pub(crate) struct Desk {
    store: Arc<Store>,
    /// Alert deliveries in flight at once. Opening a stream to every
    /// terminal of a city in the same instant makes a burst of tens of
    /// thousands of packets that overflows receive buffers (and, on real
    /// networks, the operators' queues); a bounded window keeps the burst
    /// flowing without drops.
    deliveries: Semaphore,
    /// The part of `deliveries` routine deliveries may hold (see
    /// [`Urgency`]).
    routine: Semaphore,
    /// Deliveries in flight per recipient, `delivery.per_terminal` each: a
    /// recipient that never reads holds its own places, never more of
    /// `deliveries` than that.
    per_terminal: DashMap<TerminalId, Arc<Semaphore>>,
    /// `delivery.per_terminal`.
    per_terminal_limit: usize,
    /// Delivery warnings (Unix ms clock).
    warned: warn::Gate,
    /// Terminals that may have alerts waiting (a superset): only these are
    /// looked up in the database when they connect, so a reconnect storm of
    /// 30,000 terminals does not queue 30,000 queries ahead of new alerts.
    pending: DashSet<TerminalId>,
    /// Receipts waiting for the group-commit writer.
    receipts: mpsc::UnboundedSender<QueuedReceipt>,
    /// The writer's end of `receipts`; taken by [`Desk::receipt_writer`].
    receipts_rx: Mutex<Option<mpsc::UnboundedReceiver<QueuedReceipt>>>,
    /// How long each [`Desk::blocking`] call took, queueing for a blocking
    /// thread and the store's lock included: what an SOS waits.
    latency: crate::metrics::RelayLatency,
}

impl Desk {
    /// The desk over `store`, with `pending` the terminals that may have
    /// alerts waiting and at most `per_terminal` deliveries in flight to
    /// one terminal (`delivery.per_terminal`, at least 1).
    pub(crate) fn new(
        store: Store,
        pending: impl IntoIterator<Item = TerminalId>,
        per_terminal: usize,
    ) -> Self {
        let (receipts, receipts_rx) = mpsc::unbounded_channel();
        Self {
            store: Arc::new(store),
            deliveries: Semaphore::new(MAX_DELIVERIES_IN_FLIGHT),
            routine: Semaphore::new(MAX_ROUTINE_IN_FLIGHT),
            per_terminal: DashMap::new(),
            per_terminal_limit: per_terminal.max(1),
            warned: warn::Gate::default(),
            pending: pending.into_iter().collect(),
            receipts,
            receipts_rx: Mutex::new(Some(receipts_rx)),
            latency: Default::default(),
        }
    }

    /// The store, for callers already off the async threads.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs a blocking store call off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, store::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || f(&store)).await;
        self.latency.record(started.elapsed());
        Ok(done??)
    }

    /// How long store calls took ([`Desk::blocking`]), for the metrics.
    pub(crate) fn latency(&self) -> &crate::metrics::RelayLatency {
        &self.latency
    }

    /// Waits for a place in the window of alert deliveries in flight to
    /// `terminal`: first one of its own `delivery.per_terminal` places (for
    /// `patience` at most: `None` if it still has that many in flight, as a
    /// terminal that does not read does), then a shared one, routine
    /// deliveries from their smaller share. The places are given back when
    /// the slot drops. Call before opening the delivery's stream; hold the
    /// slot until it is written or abandoned.
    pub(crate) async fn delivery_slot(
        &self,
        terminal: TerminalId,
        urgency: Urgency,
        patience: std::time::Duration,
    ) -> Option<Slot<'_>> {
        let own = self
            .per_terminal
            .entry(terminal)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_terminal_limit)))
            .clone();
        let own = tokio::time::timeout(patience, own.acquire_owned())
            .await
            .ok()?
            .expect("the per-terminal delivery semaphores are never closed");
        let routine = match urgency {
            Urgency::Urgent => None,
            Urgency::Routine => Some(
                self.routine
                    .acquire()
                    .await
                    .expect("the routine delivery semaphore is never closed"),
            ),
        };
        let shared = self
            .deliveries
            .acquire()
            .await
            .expect("the delivery semaphore is never closed");
        Some(Slot {
            _shared: shared,
            _routine: routine,
            _own: own,
        })
    }

    /// Whether a delivery warning may be logged now (one per
    /// [`warn::EVERY_MS`]; the counters count every case).
    pub(crate) fn warn_due(&self, now_ms: u64) -> bool {
        self.warned.due(now_ms)
    }

    /// Notes that alerts wait for `recipients`.
    pub(crate) fn mark_pending(&self, recipients: &[TerminalId]) {
        for r in recipients {
            self.pending.insert(*r);
        }
    }

    /// Notes that nothing waits for `terminal` any more.
    pub(crate) fn clear_pending(&self, terminal: TerminalId) {
        self.pending.remove(&terminal);
    }

    /// Queues `receipt` for the writer, so a terminal's receipts are stored
    /// in the order it sent them.
    pub(crate) fn queue_receipt(&self, receipt: ReceiptIn) -> Pending {
        let (reply, answer) = oneshot::channel();
        let queued = self.receipts.send(QueuedReceipt { receipt, reply }).is_ok();
        Pending(queued.then_some(answer))
    }

    /// The receipt writer, the first time it is asked for: run it until the
    /// gateway stops.
    pub(crate) fn receipt_writer(&self) -> Option<impl std::future::Future<Output = ()>> {
        let rx = self
            .receipts_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(write_receipts(self.store.clone(), rx))
    }
}

/// Writes receipts in batches: everything queued while the previous batch
/// was being flushed goes into the next transaction, so a city-wide alert's
/// tens of thousands of delivery receipts cost tens of disk flushes, not
/// tens of thousands, and every receipt is still on disk before it is
/// acknowledged.
async fn write_receipts(store: Arc<Store>, mut rx: mpsc::UnboundedReceiver<QueuedReceipt>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, RECEIPT_BATCH).await > 0 {
        let (receipts, replies): (Vec<_>, Vec<_>) = std::mem::take(&mut batch)
            .into_iter()
            .map(|q| (q.receipt, q.reply))
            .unzip();
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || store.record_receipts(&receipts))
            .await
            .map_err(Error::from)
            .and_then(|r| r.map_err(Error::from));
        match written {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            // Dropping the replies tells each session the receipt was not stored.
            Err(e) => {
                tracing::error!("writing receipts failed: {e}");
                if matches!(&e, Error::Store(s) if s.is_full()) {
                    // Each session answers STORAGE_FULL rather than INTERNAL.
                    for reply in replies {
                        let _ = reply.send(Err(store::Error::full()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_map_to_stable_wire_codes() {
        let refused = Error::Store(store::Error::UnknownAttachment(7));
        assert_eq!(refused.to_code(), ErrorCode::UnknownAttachment);
        let sqlite = Error::Store(store::Error::Sqlite(rusqlite::Error::InvalidQuery));
        assert_eq!(sqlite.to_code(), ErrorCode::Internal);
        assert_eq!(Error::ReceiptDropped.to_code(), ErrorCode::Internal);
        let panicked = tokio::task::spawn_blocking(|| panic!("store call panicked"))
            .await
            .expect_err("the task panicked");
        assert_eq!(Error::Task(panicked).to_code(), ErrorCode::Internal);
    }

    #[tokio::test]
    async fn blocking_carries_the_store_error_and_the_join_error() {
        let desk = Desk::new(Store::in_memory().expect("in-memory store"), [], 4);
        let refused = desk
            .blocking(|_| Err::<(), _>(store::Error::UnknownAlert(3)))
            .await;
        assert!(matches!(
            refused,
            Err(Error::Store(store::Error::UnknownAlert(3)))
        ));
        let panicked = desk.blocking(|_| -> Result<(), _> { panic!("bug") }).await;
        assert!(matches!(panicked, Err(Error::Task(_))));
    }

    #[tokio::test]
    async fn a_terminal_holds_at_most_its_own_places() {
        let desk = Desk::new(Store::in_memory().expect("in-memory store"), [], 2);
        let patience = std::time::Duration::from_millis(20);
        let stuck = TerminalId(1);
        let a = desk.delivery_slot(stuck, Urgency::Urgent, patience).await;
        let b = desk.delivery_slot(stuck, Urgency::Routine, patience).await;
        assert!(a.is_some() && b.is_some());
        assert!(
            desk.delivery_slot(stuck, Urgency::Urgent, patience)
                .await
                .is_none(),
            "a third waits its patience out"
        );
        // Others are not held up by it.
        assert!(desk
            .delivery_slot(TerminalId(2), Urgency::Urgent, patience)
            .await
            .is_some());
        drop(a);
        assert!(desk
            .delivery_slot(stuck, Urgency::Urgent, patience)
            .await
            .is_some());
    }

    #[tokio::test]
    async fn routine_deliveries_leave_places_for_urgent_ones() {
        let desk = Desk::new(Store::in_memory().expect("in-memory store"), [], 1);
        let patience = std::time::Duration::from_millis(20);
        let mut held = Vec::new();
        for t in 0..MAX_ROUTINE_IN_FLIGHT as u32 {
            let slot = desk.delivery_slot(TerminalId(t), Urgency::Routine, patience);
            held.push(slot.await.expect("a routine place"));
        }
        let more = desk.delivery_slot(TerminalId(100_000), Urgency::Routine, patience);
        assert!(
            tokio::time::timeout(patience, more).await.is_err(),
            "the routine share is full"
        );
        let urgent = desk.delivery_slot(TerminalId(100_001), Urgency::Urgent, patience);
        assert!(tokio::time::timeout(patience, urgent).await.is_ok());
    }

    #[tokio::test]
    async fn receipts_a_full_disk_refuses_are_told_storage_full() {
        let store = Store::in_memory().expect("in-memory store");
        let recipients: Vec<TerminalId> = (1..=2000).map(TerminalId).collect();
        let body = ptt_codec::AlertBody {
            kind: ptt_codec::AlertKind::Dispatch,
            priority: 1,
            ttl_s: 600,
            title: "t".into(),
            text: String::new(),
            location: None,
            attachments: Vec::new(),
        };
        let alert = store
            .create_alert(TerminalId(9), &body, "t", 1, &recipients)
            .expect("stored");
        store.fill_up();
        let desk = Desk::new(store, [], 4);
        let writer = tokio::spawn(desk.receipt_writer().expect("the first ask"));
        // Every recipient's refusal and its reason grow its row: more
        // than the capped pages hold.
        let pending: Vec<Pending> = recipients
            .iter()
            .map(|r| {
                desk.queue_receipt(ReceiptIn {
                    alert,
                    terminal: *r,
                    status: ptt_codec::ReceiptStatus::Rejected,
                    at_ms: 2,
                    reason: "不在现场".repeat(20),
                })
            })
            .collect();
        let mut full = 0;
        for p in pending {
            if let Err(e) = p.stored().await {
                assert_eq!(e.to_code(), ErrorCode::StorageFull, "{e}");
                full += 1;
            }
        }
        writer.abort();
        assert!(full > 0, "a capped database refuses some receipts");
    }

    #[test]
    fn delivery_warnings_are_rate_limited() {
        let desk = Desk::new(Store::in_memory().expect("in-memory store"), [], 1);
        assert!(desk.warn_due(100_000));
        assert!(!desk.warn_due(100_001));
        assert!(desk.warn_due(100_000 + warn::EVERY_MS));
    }
}
