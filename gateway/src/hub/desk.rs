//! The alert desk: the store, the window of deliveries in flight, the
//! terminals that may have alerts waiting, and the receipt writer's queue.

use std::sync::{Arc, Mutex};

use dashmap::DashSet;
use ptt_codec::{ErrorCode, TerminalId};
use tokio::sync::{mpsc, oneshot, Semaphore, SemaphorePermit};

use crate::store::{self, Receipt, ReceiptIn, Store};

/// Alert deliveries in flight at once (see [`Desk::delivery_slot`]).
const MAX_DELIVERIES_IN_FLIGHT: usize = 512;

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
    /// Terminals that may have alerts waiting (a superset): only these are
    /// looked up in the database when they connect, so a reconnect storm of
    /// 30,000 terminals does not queue 30,000 queries ahead of new alerts.
    pending: DashSet<TerminalId>,
    /// Receipts waiting for the group-commit writer.
    receipts: mpsc::UnboundedSender<QueuedReceipt>,
    /// The writer's end of `receipts`; taken by [`Desk::receipt_writer`].
    receipts_rx: Mutex<Option<mpsc::UnboundedReceiver<QueuedReceipt>>>,
}

impl Desk {
    /// The desk over `store`, with `pending` the terminals that may have
    /// alerts waiting.
    pub(crate) fn new(store: Store, pending: impl IntoIterator<Item = TerminalId>) -> Self {
        let (receipts, receipts_rx) = mpsc::unbounded_channel();
        Self {
            store: Arc::new(store),
            deliveries: Semaphore::new(MAX_DELIVERIES_IN_FLIGHT),
            pending: pending.into_iter().collect(),
            receipts,
            receipts_rx: Mutex::new(Some(receipts_rx)),
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
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    /// Waits for a place in the window of alert deliveries in flight; the
    /// place is given back when the permit drops.
    pub(crate) async fn delivery_slot(&self) -> SemaphorePermit<'_> {
        self.deliveries
            .acquire()
            .await
            .expect("the delivery semaphore is never closed")
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
            Err(e) => tracing::error!("writing receipts failed: {e}"),
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
        let desk = Desk::new(Store::in_memory().expect("in-memory store"), []);
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
}
