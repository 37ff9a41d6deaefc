//! The floor audit log: who talked in which group, when, for how long,
//! and how the burst ended.

use ptt_codec::TerminalId;
use ptt_gateway_core::audit::BurstRecord;
use rusqlite::params;

use super::{Error, Store};

impl Store {
    /// Appends ended bursts to the floor audit log, in one transaction.
    pub fn record_bursts(&self, bursts: &[BurstRecord]) -> Result<(), Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO floor_grant (grp, terminal, burst, class, granted_ms, ended_ms, ended_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for b in bursts {
                insert.execute(params![
                    b.group,
                    b.terminal.0,
                    b.burst,
                    b.class,
                    b.granted_ms as i64,
                    b.ended_ms as i64,
                    b.ended_by.as_str()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Bursts of `group` granted at or after `since_ms`, oldest first.
    pub fn bursts(&self, group: u32, since_ms: u64) -> Result<Vec<BurstRecord>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT grp, terminal, burst, class, granted_ms, ended_ms, ended_by FROM floor_grant
             WHERE grp = ?1 AND granted_ms >= ?2 ORDER BY granted_ms, id",
        )?;
        let rows = stmt.query_map(params![group, since_ms as i64], |r| {
            Ok(BurstRecord {
                group: r.get(0)?,
                terminal: TerminalId(r.get(1)?),
                burst: r.get(2)?,
                class: r.get(3)?,
                granted_ms: r.get::<_, i64>(4)? as u64,
                ended_ms: r.get::<_, i64>(5)? as u64,
                ended_by: r.get::<_, String>(6)?.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        6,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_gateway_core::audit::EndedBy;

    #[test]
    fn the_floor_audit_log_keeps_bursts_in_order() {
        let s = Store::in_memory().unwrap();
        let b = |terminal: u32, granted_ms: u64, ended_by: EndedBy| BurstRecord {
            group: 5,
            terminal: TerminalId(terminal),
            burst: 1,
            class: 0,
            granted_ms,
            ended_ms: granted_ms + 4_000,
            ended_by,
        };
        s.record_bursts(&[
            b(501, 1_000, EndedBy::Released),
            b(504, 6_000, EndedBy::Preempted),
        ])
        .unwrap();
        s.record_bursts(&[b(300, 9_000, EndedBy::BurstTooLong)])
            .unwrap();
        let all = s.bursts(5, 0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.terminal.0).collect::<Vec<_>>(),
            vec![501, 504, 300]
        );
        assert_eq!(s.bursts(5, 5_000).unwrap().len(), 2);
        assert!(s.bursts(6, 0).unwrap().is_empty());
        assert_eq!(all[2].ended_by, EndedBy::BurstTooLong);
        let stored: Vec<String> = s
            .lock()
            .prepare("SELECT ended_by FROM floor_grant ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, ["released", "preempted", "burst_too_long"]);
    }
}
