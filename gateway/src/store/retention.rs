//! Retention: deleting alerts (with their receipts, photo references and
//! drill reports) and floor audit rows once they are older than the
//! operator keeps them, a bounded batch per transaction so that the store
//! is never held long while an SOS waits to be stored.

use ptt_codec::AlertKind;
use rusqlite::{params, Connection, Transaction};

use super::{Error, Store};

/// How old an alert must be before it is deleted, by kind. Each cut-off is
/// a Unix ms time: rows created before it go; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Alerts other than SOS (dispatches, notices, reports, drills).
    pub alerts_before_ms: Option<u64>,
    /// SOS alerts.
    pub sos_before_ms: Option<u64>,
}

/// What one batch of [`Store::retire_alerts`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    /// Alerts deleted.
    pub alerts: u64,
    /// Recipient rows (each recipient's receipts) deleted.
    pub receipts: u64,
    /// Photos deleted because the last alert that carried them went.
    pub attachments: u64,
    /// Whether the batch stopped at its row budget: more may be due, call
    /// again (after letting other store calls in).
    pub more: bool,
}

impl Store {
    /// Deletes alerts created before their kind's cut-off in `cutoffs`,
    /// oldest first, touching at most `budget` alert and recipient rows in
    /// one short transaction. With each alert go its recipients (their
    /// receipts), its photo references, its drill reports and the photos
    /// no other alert carries. An alert is never deleted while it is
    /// deliverable at `now_ms` (not expired: store and forward may still
    /// owe it to someone) or while it is a terminal's active SOS. An alert
    /// with more recipients than the budget loses them over several
    /// batches and goes in the last one.
    ///
    /// Call it from the background sweep in a loop while
    /// [`Retired::more`], taking the store's lock once per batch, so other
    /// calls (an SOS being stored) run between batches. `budget` is at
    /// least 1.
    pub fn retire_alerts(
        &self,
        cutoffs: Cutoffs,
        now_ms: u64,
        budget: u32,
    ) -> Result<Retired, Error> {
        let budget = u64::from(budget.max(1));
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let due = Self::alerts_due(&tx, cutoffs, now_ms, budget)?;
        let mut out = Retired::default();
        let mut left = budget;
        for alert in due {
            let receipts = tx.execute(
                "DELETE FROM recipient WHERE alert = ?1 AND terminal IN
                   (SELECT terminal FROM recipient WHERE alert = ?1 LIMIT ?2)",
                params![alert, left as i64],
            )? as u64;
            out.receipts += receipts;
            left = left.saturating_sub(receipts);
            let rest: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM recipient WHERE alert = ?1)",
                [alert],
                |r| r.get(0),
            )?;
            if rest || left == 0 {
                // Its last recipients (or the alert row itself) go in the
                // next batch.
                out.more = true;
                break;
            }
            out.attachments += Self::retire_one(&tx, alert)?;
            out.alerts += 1;
            left -= 1;
        }
        if left == 0 {
            out.more = true;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The ids of alerts due for deletion at `now_ms`, oldest first, at
    /// most `limit`.
    fn alerts_due(
        conn: &Connection,
        cutoffs: Cutoffs,
        now_ms: u64,
        limit: u64,
    ) -> rusqlite::Result<Vec<i64>> {
        // i64::MIN keeps a kind whose retention is forever.
        let cut = |c: Option<u64>| c.map_or(i64::MIN, |ms| ms.min(i64::MAX as u64) as i64);
        let (alerts, sos) = (cut(cutoffs.alerts_before_ms), cut(cutoffs.sos_before_ms));
        let oldest = alerts.max(sos);
        // `alert_by_created` bounds the scan to alerts older than the
        // later cut-off; the kind picks its own.
        let mut stmt = conn.prepare_cached(
            "SELECT a.id FROM alert a
             WHERE a.created_ms < ?1
               AND a.created_ms < CASE WHEN a.kind = ?2 THEN ?3 ELSE ?4 END
               AND a.expires_ms <= ?5
               AND NOT EXISTS (SELECT 1 FROM active_sos s WHERE s.alert = a.id)
             ORDER BY a.created_ms, a.id LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![
                oldest,
                AlertKind::Sos.code(),
                sos,
                alerts,
                now_ms.min(i64::MAX as u64) as i64,
                limit as i64
            ],
            |r| r.get(0),
        )?;
        rows.collect()
    }

    /// Deletes alert `alert` (its recipients already gone), its photo
    /// references and drill reports, and the photos no other alert
    /// carries; returns how many photos.
    fn retire_one(tx: &Transaction<'_>, alert: i64) -> rusqlite::Result<u64> {
        let photos: Vec<i64> = tx
            .prepare_cached("SELECT attachment FROM alert_attachment WHERE alert = ?1")?
            .query_map([alert], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM alert_attachment WHERE alert = ?1", [alert])?;
        let mut gone = 0;
        for photo in photos {
            gone += tx.execute(
                "DELETE FROM attachment WHERE id = ?1
                   AND NOT EXISTS (SELECT 1 FROM alert_attachment aa WHERE aa.attachment = ?1)",
                [photo],
            )? as u64;
        }
        tx.execute("DELETE FROM drill_report WHERE alert = ?1", [alert])?;
        tx.execute("DELETE FROM alert WHERE id = ?1", [alert])?;
        Ok(gone)
    }

    /// Deletes floor audit rows of bursts granted before `before_ms`,
    /// oldest first, at most `budget` in one transaction; returns how many.
    /// Call it from the background sweep in a loop while it returns
    /// `budget` (`budget` is at least 1).
    pub fn retire_bursts(&self, before_ms: u64, budget: u32) -> Result<u64, Error> {
        let conn = self.lock();
        let n = conn.execute(
            "DELETE FROM floor_grant WHERE id IN
               (SELECT id FROM floor_grant WHERE granted_ms < ?1 ORDER BY granted_ms LIMIT ?2)",
            params![before_ms.min(i64::MAX as u64) as i64, budget.max(1)],
        )?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;
    use ptt_codec::{GroupId, ReceiptStatus, TerminalId};
    use ptt_gateway_core::audit::{BurstRecord, EndedBy};
    use ptt_gateway_core::sos::Active;

    const DAY: u64 = 86_400_000;

    fn count(s: &Store, table: &str) -> i64 {
        s.lock()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("a table of the schema")
    }

    fn cutoffs(now: u64, alert_days: u64, sos_days: u64) -> Cutoffs {
        Cutoffs {
            alerts_before_ms: Some(now.saturating_sub(alert_days * DAY)),
            sos_before_ms: Some(now.saturating_sub(sos_days * DAY)),
        }
    }

    #[test]
    fn old_alerts_go_with_their_receipts_photos_and_reports() {
        let s = Store::in_memory().unwrap();
        let (console, a, b) = (TerminalId(1), TerminalId(2), TerminalId(3));
        let photo = s
            .put_attachment(console, "image/jpeg", b"jpg", DAY)
            .unwrap();
        let kept_photo = s
            .put_attachment(console, "image/jpeg", b"jp2", DAY)
            .unwrap();
        let mut with_photos = body(600);
        with_photos.attachments = s.attachment_refs(console, &[photo, kept_photo]).unwrap();
        let old = s
            .create_alert(console, &with_photos, "t", DAY, &[a, b])
            .unwrap();
        s.record_receipt(old, a, ReceiptStatus::Accepted, DAY + 5, "")
            .unwrap();
        s.save_drill_report(old, DAY + 9, "{}").unwrap();
        // A younger alert carries the second photo too: it stays.
        let mut young_body = body(600);
        young_body.attachments = s.attachment_refs(console, &[kept_photo]).unwrap();
        let young = s
            .create_alert(console, &young_body, "t", 300 * DAY, &[a])
            .unwrap();

        let now = 400 * DAY;
        let r = s.retire_alerts(cutoffs(now, 365, 1095), now, 100).unwrap();
        assert_eq!(
            r,
            Retired {
                alerts: 1,
                receipts: 2,
                attachments: 1,
                more: false
            }
        );
        assert!(s.alert(old).unwrap().is_none());
        assert!(s.latest_drill_report(old).unwrap().is_none());
        assert!(s.fetchable_attachment(console, photo).unwrap().is_none());
        assert_eq!(
            s.alert(young).unwrap().unwrap().body.attachments.len(),
            1,
            "the younger alert keeps its photo"
        );
        assert!(s.fetchable_attachment(a, kept_photo).unwrap().is_some());
        assert_eq!(count(&s, "recipient"), 1);
        // Nothing more is due: a second sweep deletes nothing.
        assert_eq!(
            s.retire_alerts(cutoffs(now, 365, 1095), now, 100).unwrap(),
            Retired::default()
        );
        // Retention 0 (forever) for both kinds keeps everything.
        let forever = Cutoffs {
            alerts_before_ms: None,
            sos_before_ms: None,
        };
        assert_eq!(
            s.retire_alerts(forever, 10_000 * DAY, 100).unwrap(),
            Retired::default()
        );
        assert!(s.alert(young).unwrap().is_some());
    }

    #[test]
    fn deliverable_alerts_and_active_sos_are_kept_and_sos_is_kept_longer() {
        let s = Store::in_memory().unwrap();
        let (guard, station) = (TerminalId(501), TerminalId(1));
        let now = 2_000 * DAY;
        // Undelivered, and deliverable for years more (its time to live is
        // long): store and forward still owes it.
        let mut long = body(u32::MAX);
        long.title = "long".into();
        let deliverable = s.create_alert(station, &long, "t", DAY, &[guard]).unwrap();
        // An SOS 400 days old: past the alerts' retention, within SOS's.
        let mut sos_body = body(3600);
        sos_body.kind = AlertKind::Sos;
        let sos = s
            .create_alert(guard, &sos_body, "sos", now - 400 * DAY, &[station])
            .unwrap();
        // An SOS years old that is still its terminal's active SOS (never
        // cancelled): kept.
        let active = s
            .create_alert(TerminalId(502), &sos_body, "sos", DAY, &[station])
            .unwrap();
        s.put_active_sos(
            TerminalId(502),
            &Active {
                alert: active,
                group: GroupId(5),
                recipients: vec![station],
                expires_ms: DAY + 3_600_000,
            },
        )
        .unwrap();
        // An SOS years old, cancelled long ago: goes.
        let old_sos = s
            .create_alert(guard, &sos_body, "sos", DAY, &[station])
            .unwrap();
        let dispatch = s
            .create_alert(station, &body(600), "t", now - 400 * DAY, &[guard])
            .unwrap();

        let r = s.retire_alerts(cutoffs(now, 365, 1095), now, 100).unwrap();
        assert_eq!((r.alerts, r.receipts, r.more), (2, 2, false));
        assert!(s.alert(old_sos).unwrap().is_none());
        assert!(s.alert(dispatch).unwrap().is_none());
        assert!(s.alert(sos).unwrap().is_some(), "SOS kept longer");
        assert!(s.alert(active).unwrap().is_some(), "an active SOS is kept");
        assert_eq!(s.undelivered(guard, now).unwrap()[0].id, deliverable);
        // SOS kept forever, alerts after a day: only alerts go.
        let r = s
            .retire_alerts(
                Cutoffs {
                    alerts_before_ms: Some(now - DAY),
                    sos_before_ms: None,
                },
                now,
                100,
            )
            .unwrap();
        assert_eq!(r.alerts, 0, "the deliverable alert and the SOS stay");
        assert!(s.alert(sos).unwrap().is_some());
    }

    #[test]
    fn a_batch_touches_at_most_its_budget_of_rows() {
        let s = Store::in_memory().unwrap();
        let recipients: Vec<TerminalId> = (100..110).map(TerminalId).collect();
        for i in 0..3 {
            s.create_alert(TerminalId(1), &body(60), "t", DAY + i, &recipients)
                .unwrap();
        }
        let now = 1_000 * DAY;
        let c = cutoffs(now, 365, 1095);
        // 3 alerts of 10 recipients: 33 rows, 4 a batch.
        let mut batches = 0;
        let mut total = Retired::default();
        loop {
            let before = count(&s, "recipient") + count(&s, "alert");
            let r = s.retire_alerts(c, now, 4).unwrap();
            let after = count(&s, "recipient") + count(&s, "alert");
            assert!(
                before - after <= 4,
                "batch {batches} touched {}",
                before - after
            );
            total.alerts += r.alerts;
            total.receipts += r.receipts;
            batches += 1;
            if !r.more {
                break;
            }
            assert!(batches < 100, "retention makes progress");
        }
        assert_eq!((total.alerts, total.receipts), (3, 30));
        assert_eq!(count(&s, "alert"), 0);
        assert!(batches >= 9, "{batches} batches");
    }

    #[test]
    fn the_sweep_reads_only_old_rows_through_the_age_indexes() {
        let s = Store::in_memory().unwrap();
        let conn = s.lock();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.collect::<Result<Vec<_>, _>>().unwrap().join("; ")
        };
        let alerts = plan(
            "SELECT a.id FROM alert a WHERE a.created_ms < 5
               AND a.created_ms < CASE WHEN a.kind = 5 THEN 3 ELSE 4 END AND a.expires_ms <= 9
               AND NOT EXISTS (SELECT 1 FROM active_sos s WHERE s.alert = a.id)
             ORDER BY a.created_ms, a.id LIMIT 10",
        );
        assert!(alerts.contains("alert_by_created"), "{alerts}");
        let audit =
            plan("SELECT id FROM floor_grant WHERE granted_ms < 5 ORDER BY granted_ms LIMIT 3");
        assert!(audit.contains("floor_grant_by_granted"), "{audit}");
    }

    #[test]
    fn the_floor_audit_is_retired_in_batches_oldest_first() {
        let s = Store::in_memory().unwrap();
        let burst = |granted_ms: u64| BurstRecord {
            group: 5,
            terminal: TerminalId(501),
            burst: 1,
            class: 0,
            granted_ms,
            ended_ms: granted_ms + 4_000,
            ended_by: EndedBy::Released,
        };
        let bursts: Vec<_> = (0..10).map(|i| burst(i * DAY)).collect();
        s.record_bursts(&bursts).unwrap();
        assert_eq!(s.retire_bursts(5 * DAY, 3).unwrap(), 3);
        assert_eq!(s.retire_bursts(5 * DAY, 3).unwrap(), 2);
        assert_eq!(s.retire_bursts(5 * DAY, 3).unwrap(), 0);
        let left = s.bursts(5, 0).unwrap();
        assert_eq!(left.len(), 5);
        assert_eq!(left[0].granted_ms, 5 * DAY);
    }
}
