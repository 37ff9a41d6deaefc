//! Retention and the disk budget of recordings, enforced in the
//! background: oldest first, SOS bursts kept longer and evicted last.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::config;
use crate::metrics::Metrics;
use crate::store::{Recording, Store};

/// Rows read per round of deletion.
const BATCH: u32 = 256;

const DAY_MS: u64 = 86_400_000;

/// The sweep thread's state.
#[derive(Debug)]
pub(super) struct Sweep {
    dir: PathBuf,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    interval: Duration,
    retention_days: u32,
    sos_retention_days: u32,
    budget_bytes: u64,
}

impl Sweep {
    pub(super) fn new(
        config: &config::Recording,
        dir: PathBuf,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            dir,
            store,
            metrics,
            interval: Duration::from_secs(u64::from(config.sweep_interval_s)),
            retention_days: config.retention_days,
            sos_retention_days: config.sos_retention_days,
            budget_bytes: config.disk_budget_bytes,
        }
    }

    /// Sweeps once at start and every interval until `stop` closes.
    pub(super) fn run(self, stop: Receiver<()>) {
        loop {
            if let Err(e) = self.once(crate::clock::now_ms()) {
                tracing::error!("sweeping recordings failed: {e}");
            }
            match stop.recv_timeout(self.interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Deletes what retention and the budget say must go, at `now_ms`;
    /// returns how many.
    pub(super) fn once(&self, now_ms: u64) -> Result<u64, crate::store::Error> {
        let before =
            |days: u32| (days > 0).then(|| now_ms.saturating_sub(u64::from(days) * DAY_MS));
        let (normal, sos) = (before(self.retention_days), before(self.sos_retention_days));
        let mut deleted = 0;
        if normal.is_some() || sos.is_some() {
            loop {
                let batch = self.store.expired_recordings(normal, sos, BATCH)?;
                if batch.is_empty() {
                    break;
                }
                deleted += self.delete(&batch)?;
            }
        }
        if self.budget_bytes > 0 {
            let mut total = self.store.recordings_bytes()?;
            while total > self.budget_bytes {
                let batch = self.store.recordings_to_evict(BATCH)?;
                let mut take = Vec::new();
                for r in batch {
                    if total <= self.budget_bytes {
                        break;
                    }
                    total = total.saturating_sub(r.bytes);
                    take.push(r);
                }
                if take.is_empty() {
                    break;
                }
                deleted += self.delete(&take)?;
            }
        }
        Ok(deleted)
    }

    /// Deletes the files, then the rows (a crash between leaves a row
    /// whose file is gone, which export reports, never a file nobody
    /// indexes).
    fn delete(&self, recordings: &[Recording]) -> Result<u64, crate::store::Error> {
        for r in recordings {
            let Some(rel) = &r.path else { continue };
            match std::fs::remove_file(self.dir.join(rel)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(recording = r.id, "deleting {rel} failed: {e}"),
            }
        }
        let ids: Vec<u64> = recordings.iter().map(|r| r.id).collect();
        self.store.delete_recordings(&ids)?;
        Metrics::add(&self.metrics.recordings_deleted, ids.len() as u64);
        Ok(ids.len() as u64)
    }
}
