//! Background upkeep beside the listener: the retention sweep (alerts,
//! receipts, floor audit) and the watch on the data directory's free
//! space.

use std::sync::Arc;
use std::time::Duration;

use ptt_codec::alert::MAX_ATTACHMENT;

use crate::clock::now_ms;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Cutoffs, Retired};

const DAY_MS: u64 = 86_400_000;

/// The cut-off time `days` before `now_ms`; `None` for 0 (keep forever).
fn before(now_ms: u64, days: u32) -> Option<u64> {
    (days > 0).then(|| now_ms.saturating_sub(u64::from(days) * DAY_MS))
}

/// Deletes alerts (with their receipts) and floor audit rows older than
/// `[retention]` keeps them, every `retention.interval_s`, in batches of
/// `retention.batch_rows` with `retention.batch_pause_ms` between them, so
/// that the store's lock is free for an SOS between batches. Run it once,
/// beside the listener, until the gateway stops.
pub(crate) async fn retention(hub: Arc<Hub>) {
    let c = hub.config().retention.clone();
    if c.alert_days == 0 && c.sos_days == 0 && c.audit_days == 0 {
        return;
    }
    let pause = Duration::from_millis(u64::from(c.batch_pause_ms));
    let mut every = tokio::time::interval(Duration::from_secs(u64::from(c.interval_s)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = now_ms();
        let cutoffs = Cutoffs {
            alerts_before_ms: before(now, c.alert_days),
            sos_before_ms: before(now, c.sos_days),
        };
        let mut total = Retired::default();
        let mut audit = 0u64;
        let swept: Result<(), crate::hub::Error> = async {
            loop {
                let batch = c.batch_rows;
                let r = hub
                    .desk()
                    .blocking(move |s| s.retire_alerts(cutoffs, now, batch))
                    .await?;
                Metrics::add(&hub.metrics().alerts_retired, r.alerts);
                Metrics::add(&hub.metrics().receipts_retired, r.receipts);
                Metrics::add(&hub.metrics().attachments_retired, r.attachments);
                total.alerts += r.alerts;
                total.receipts += r.receipts;
                total.attachments += r.attachments;
                if !r.more {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let Some(audit_before) = before(now, c.audit_days) else {
                return Ok(());
            };
            loop {
                let batch = c.batch_rows;
                let n = hub
                    .desk()
                    .blocking(move |s| s.retire_bursts(audit_before, batch))
                    .await?;
                Metrics::add(&hub.metrics().audit_rows_retired, n);
                audit += n;
                if n < u64::from(batch) {
                    return Ok(());
                }
                tokio::time::sleep(pause).await;
            }
        }
        .await;
        if total.alerts + total.receipts + audit > 0 {
            tracing::info!(
                alerts = total.alerts,
                receipts = total.receipts,
                attachments = total.attachments,
                audit_rows = audit,
                "retention: old rows deleted"
            );
        }
        if let Err(e) = swept {
            tracing::error!("retention sweep failed (retried next interval): {e}");
        }
    }
}

/// What the disk watch should do after a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alarm {
    /// Free space fell under the reserve: log an error, count it.
    Raised,
    /// Still under it, a reminder is due: log the error again.
    Reminder,
    /// Back above it: log that it cleared.
    Cleared,
}

/// The disk alarm's state: on while free space is under `threshold`
/// bytes, with a reminder every `reminder_ms` while on. Sans-I/O: fed
/// readings and times.
#[derive(Debug)]
pub(crate) struct DiskAlarm {
    threshold: u64,
    reminder_ms: u64,
    /// When the error was last logged, while the alarm is on.
    on_since_log: Option<u64>,
}

impl DiskAlarm {
    /// An alarm at `threshold` free bytes, reminding every `reminder_ms`.
    pub(crate) fn new(threshold: u64, reminder_ms: u64) -> Self {
        Self {
            threshold,
            reminder_ms,
            on_since_log: None,
        }
    }

    /// Takes a reading of `free` bytes at `now_ms`; what to log, if
    /// anything (once per change of state, and a reminder while low).
    pub(crate) fn observe(&mut self, free: u64, now_ms: u64) -> Option<Alarm> {
        let low = free < self.threshold;
        match (low, self.on_since_log) {
            (true, None) => {
                self.on_since_log = Some(now_ms);
                Some(Alarm::Raised)
            }
            (true, Some(logged)) if now_ms.saturating_sub(logged) >= self.reminder_ms => {
                self.on_since_log = Some(now_ms);
                Some(Alarm::Reminder)
            }
            (true, Some(_)) => None,
            (false, Some(_)) => {
                self.on_since_log = None;
                Some(Alarm::Cleared)
            }
            (false, None) => None,
        }
    }

    /// Whether the alarm is on.
    #[cfg(test)]
    pub(crate) fn is_on(&self) -> bool {
        self.on_since_log.is_some()
    }
}

/// Bytes an unprivileged process may still write in the file system of
/// `dir` (statvfs). Blocks on the file system: call it off the async
/// threads.
pub(crate) fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Reads the data directory's free space every `disk.watch_interval_s`
/// into the `disk_free_bytes` gauge, and raises the disk alarm while it is
/// under `attachments.disk_reserve_bytes` plus one upload (where uploads
/// are refused): an error in the log once when it falls under (counted in
/// `disk_low_alarms`), again every `disk.reminder_interval_s` while it
/// stays under, and a warning when it clears. Run it once, beside the
/// listener, until the gateway stops.
pub(crate) async fn watch_disk(hub: Arc<Hub>) {
    let c = hub.config().disk.clone();
    let reserve = hub.config().attachments.disk_reserve_bytes;
    let threshold = reserve.saturating_add(u64::from(MAX_ATTACHMENT));
    let mut alarm = DiskAlarm::new(threshold, u64::from(c.reminder_interval_s) * 1000);
    let dir = hub.config().data_dir.clone();
    let mut unreadable_logged = false;
    let mut every = tokio::time::interval(Duration::from_secs(u64::from(c.watch_interval_s)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let d = dir.clone();
        let free = match tokio::task::spawn_blocking(move || free_bytes(&d)).await {
            Ok(Ok(free)) => free,
            Ok(Err(e)) => {
                if !unreadable_logged {
                    tracing::warn!(dir = %dir.display(), "reading the data directory's free space failed: {e}");
                    unreadable_logged = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("the disk watch's statvfs task failed: {e}");
                continue;
            }
        };
        Metrics::set(&hub.metrics().disk_free_bytes, free);
        match alarm.observe(free, now_ms()) {
            Some(Alarm::Raised) => {
                Metrics::add(&hub.metrics().disk_low_alarms, 1);
                tracing::error!(
                    dir = %dir.display(),
                    free,
                    reserve,
                    "DISK LOW: the data directory is under its reserve; uploads are refused, \
                     SOS, alerts and receipts still store until the disk is full, then are \
                     answered STORAGE_FULL. Free space now"
                );
            }
            Some(Alarm::Reminder) => tracing::error!(
                dir = %dir.display(),
                free,
                reserve,
                "DISK LOW still: the data directory is under its reserve; free space now"
            ),
            Some(Alarm::Cleared) => tracing::warn!(
                dir = %dir.display(),
                free,
                reserve,
                "disk alarm cleared: the data directory is above its reserve again"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_alarm_logs_once_per_change_and_reminds() {
        let mut a = DiskAlarm::new(100, 600_000);
        assert_eq!(a.observe(500, 0), None);
        assert_eq!(a.observe(99, 10_000), Some(Alarm::Raised));
        assert!(a.is_on());
        assert_eq!(a.observe(50, 20_000), None, "still low: no repeat yet");
        assert_eq!(a.observe(50, 609_999), None);
        assert_eq!(a.observe(0, 610_000), Some(Alarm::Reminder));
        assert_eq!(a.observe(0, 620_000), None);
        assert_eq!(a.observe(100, 630_000), Some(Alarm::Cleared));
        assert!(!a.is_on());
        assert_eq!(a.observe(1_000, 640_000), None);
        assert_eq!(a.observe(10, 650_000), Some(Alarm::Raised), "again");
    }

    #[test]
    fn retention_days_become_cutoffs_and_zero_keeps_forever() {
        assert_eq!(before(10 * DAY_MS, 0), None);
        assert_eq!(before(10 * DAY_MS, 3), Some(7 * DAY_MS));
        assert_eq!(before(DAY_MS, 3), Some(0), "no underflow");
    }

    #[tokio::test]
    async fn the_sweep_retires_old_alerts_and_audit_rows_in_batches() {
        use ptt_codec::{AlertBody, AlertKind, TerminalId};
        use ptt_gateway_core::audit::{BurstRecord, EndedBy};
        use std::sync::atomic::Ordering::Relaxed;

        let mut config = crate::config::Config::default();
        config.retention.interval_s = 1;
        config.retention.batch_rows = 3;
        config.retention.batch_pause_ms = 1;
        let hub = crate::ops::testing::hub_with(config);
        let store = hub.desk().store().clone();
        let body = AlertBody {
            kind: AlertKind::Dispatch,
            priority: 1,
            ttl_s: 60,
            title: "t".into(),
            text: String::new(),
            location: None,
            attachments: Vec::new(),
        };
        // In 1970: long past every retention. One alert made now stays.
        for i in 0..4 {
            store
                .create_alert(
                    TerminalId(300),
                    &body,
                    "t",
                    i,
                    &[TerminalId(501), TerminalId(502)],
                )
                .unwrap();
        }
        let young = store
            .create_alert(TerminalId(300), &body, "t", now_ms(), &[TerminalId(501)])
            .unwrap();
        let bursts: Vec<_> = (0..7)
            .map(|i| BurstRecord {
                group: 5,
                terminal: TerminalId(501),
                burst: i,
                class: 0,
                granted_ms: u64::from(i),
                ended_ms: u64::from(i) + 1,
                ended_by: EndedBy::Released,
            })
            .collect();
        store.record_bursts(&bursts).unwrap();
        let sweep = tokio::spawn(retention(hub.clone()));
        let m = hub.metrics();
        for _ in 0..200 {
            if m.audit_rows_retired.load(Relaxed) == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sweep.abort();
        assert_eq!(m.alerts_retired.load(Relaxed), 4);
        assert_eq!(m.receipts_retired.load(Relaxed), 8);
        assert_eq!(m.audit_rows_retired.load(Relaxed), 7);
        assert!(store.alert(young).unwrap().is_some());
        assert!(store.bursts(5, 0).unwrap().is_empty());
    }

    #[test]
    fn free_space_of_the_data_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
