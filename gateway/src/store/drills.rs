//! Drills: each recipient's progress, the drill list, and saved reports.

use ptt_codec::{AlertKind, TerminalId};
use ptt_gateway_core::drill::Progress;
use rusqlite::{params, OptionalExtension};

use super::{Error, Store};

impl Store {
    /// Every recipient's drill progress: first receipt of any kind,
    /// acceptance, arrival (Unix ms).
    pub fn drill_progress(&self, alert: u64) -> Result<Vec<Progress>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT terminal,
                    min(coalesce(delivered_ms, 1e18), coalesce(read_ms, 1e18), coalesce(accepted_ms, 1e18),
                        coalesce(rejected_ms, 1e18), coalesce(arrived_ms, 1e18), coalesce(resolved_ms, 1e18)),
                    accepted_ms, coalesce(arrived_ms, resolved_ms)
             FROM recipient WHERE alert = ?1 ORDER BY terminal",
        )?;
        let rows = stmt.query_map([alert as i64], |r| {
            let first: f64 = r.get(1)?;
            Ok(Progress {
                terminal: TerminalId(r.get(0)?),
                receipt_ms: (first < 1e18).then_some(first as u64),
                accept_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                arrive_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps a drill report (JSON) as made at `generated_ms`.
    pub fn save_drill_report(
        &self,
        alert: u64,
        generated_ms: u64,
        json: &str,
    ) -> Result<(), Error> {
        self.lock().execute(
            "INSERT INTO drill_report (alert, generated_ms, json) VALUES (?1, ?2, ?3)",
            params![alert as i64, generated_ms as i64, json],
        )?;
        Ok(())
    }

    /// The latest saved report of a drill, with when it was made.
    pub fn latest_drill_report(&self, alert: u64) -> Result<Option<(u64, String)>, Error> {
        Ok(self
            .lock()
            .query_row(
                "SELECT generated_ms, json FROM drill_report WHERE alert = ?1
                 ORDER BY generated_ms DESC, id DESC LIMIT 1",
                [alert as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// Drills started at or after `since_ms`, newest first: id, title,
    /// issuer, created (Unix ms).
    pub fn drills(&self, since_ms: u64) -> Result<Vec<(u64, String, TerminalId, u64)>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, title, issuer, created_ms FROM alert WHERE kind = ?1 AND created_ms >= ?2
             ORDER BY id DESC",
        )?;
        let rows = stmt.query_map(params![AlertKind::Drill.code(), since_ms as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                TerminalId(r.get(2)?),
                r.get::<_, i64>(3)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;
    use ptt_codec::ReceiptStatus;

    #[test]
    fn drill_progress_takes_the_first_receipt_of_any_kind() {
        let s = Store::in_memory().unwrap();
        let mut drill = body(600);
        drill.kind = AlertKind::Drill;
        let (a, b, c) = (TerminalId(2), TerminalId(3), TerminalId(4));
        let id = s
            .create_alert(TerminalId(1), &drill, "t", 1000, &[a, b, c])
            .unwrap();
        s.record_receipt(id, a, ReceiptStatus::Delivered, 1100, "")
            .unwrap();
        s.record_receipt(id, a, ReceiptStatus::Accepted, 1500, "")
            .unwrap();
        s.record_receipt(id, a, ReceiptStatus::Arrived, 9000, "")
            .unwrap();
        // b was offline and reports its arrival first.
        s.record_receipt(id, b, ReceiptStatus::Arrived, 7000, "")
            .unwrap();
        let p = s.drill_progress(id).unwrap();
        assert_eq!(
            (p[0].receipt_ms, p[0].accept_ms, p[0].arrive_ms),
            (Some(1100), Some(1500), Some(9000))
        );
        assert_eq!((p[1].receipt_ms, p[1].arrive_ms), (Some(7000), Some(7000)));
        assert_eq!((p[2].receipt_ms, p[2].accept_ms), (None, None));
        assert_eq!(s.drills(0).unwrap()[0].0, id);
        s.save_drill_report(id, 2000, "{}").unwrap();
        s.save_drill_report(id, 3000, "{\"n\":2}").unwrap();
        assert_eq!(
            s.latest_drill_report(id).unwrap(),
            Some((3000, "{\"n\":2}".into()))
        );
    }
}
