//! What the operations surface reads and writes: readiness, recent alerts
//! with their receipt summaries, and the audit of operators' actions.

use ptt_codec::{AlertKind, StatusCounts, TerminalId};
use rusqlite::params;

use super::{Error, Store};

/// An alert as an operator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSummary {
    /// Alert id.
    pub id: u64,
    /// Dispatch, SOS, report, ...
    pub kind: AlertKind,
    /// Who sent it.
    pub issuer: TerminalId,
    /// Its title.
    pub title: String,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
    /// Who cancelled it and when, if anyone did.
    pub cancelled: Option<(TerminalId, u64)>,
    /// Recipients.
    pub recipients: u32,
    /// Recipients by how far they got.
    pub counts: StatusCounts,
}

/// One action an operator took through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAction {
    /// Unix ms.
    pub at_ms: u64,
    /// The operator (the name of the token used).
    pub operator: String,
    /// What was done, e.g. `disconnect`.
    pub action: String,
    /// On what, e.g. `terminal 501`.
    pub target: String,
    /// How it went, e.g. `done` or `not online`.
    pub outcome: String,
}

impl Store {
    /// Takes and gives back the database's write lock without writing:
    /// `Ok` when a write could be made now (the readiness probe).
    pub fn writable(&self) -> Result<(), Error> {
        let conn = self.lock();
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
        Ok(())
    }

    /// The newest alerts created at or after `since_ms`, at most `limit`,
    /// newest first, with their receipt summaries at `now_ms`.
    pub fn recent_alerts(
        &self,
        since_ms: u64,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<AlertSummary>, Error> {
        let alerts: Vec<AlertSummary> = {
            let conn = self.lock();
            let mut stmt = conn.prepare(
                "SELECT id, kind, issuer, title, created_ms, expires_ms, cancelled_by, cancelled_ms
                 FROM alert WHERE created_ms >= ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![since_ms as i64, limit], |r| {
                let by: Option<u32> = r.get(6)?;
                let at: Option<i64> = r.get(7)?;
                Ok(AlertSummary {
                    id: r.get::<_, i64>(0)? as u64,
                    kind: AlertKind::from_code(r.get(1)?).unwrap_or(AlertKind::Notice),
                    issuer: TerminalId(r.get(2)?),
                    title: r.get(3)?,
                    created_ms: r.get::<_, i64>(4)? as u64,
                    expires_ms: r.get::<_, i64>(5)? as u64,
                    cancelled: by.zip(at).map(|(t, ms)| (TerminalId(t), ms as u64)),
                    recipients: 0,
                    counts: StatusCounts::default(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        // One alert's counts per lock, so a long list never holds the store
        // (an SOS waiting to be stored) for more than one small query.
        let mut out = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            // None: retired between the two reads.
            if let Some((_, recipients, counts)) = self.status(a.id, now_ms)? {
                (a.recipients, a.counts) = (recipients, counts);
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Writes one operator action to the admin audit table.
    pub fn record_admin_action(&self, action: &AdminAction) -> Result<(), Error> {
        self.lock().execute(
            "INSERT INTO admin_action (at_ms, operator, action, target, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                action.at_ms as i64,
                action.operator,
                action.action,
                action.target,
                action.outcome
            ],
        )?;
        Ok(())
    }

    /// The newest `limit` operator actions, newest first.
    pub fn admin_actions(&self, limit: u32) -> Result<Vec<AdminAction>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT at_ms, operator, action, target, outcome FROM admin_action
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AdminAction {
                at_ms: r.get::<_, i64>(0)? as u64,
                operator: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                outcome: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;

    #[test]
    fn recent_alerts_are_newest_first_with_their_counts() {
        let s = Store::in_memory().unwrap();
        s.writable().unwrap();
        let old = s
            .create_alert(
                TerminalId(300),
                &body(60),
                "group 5",
                1_000,
                &[TerminalId(501)],
            )
            .unwrap();
        let new = s
            .create_alert(
                TerminalId(300),
                &body(60),
                "group 5",
                2_000,
                &[TerminalId(501), TerminalId(502)],
            )
            .unwrap();
        let all = s.recent_alerts(0, 10, 3_000).unwrap();
        assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), [new, old]);
        assert_eq!(all[0].recipients, 2);
        assert_eq!(all[0].counts.by_status[0], 2, "both pending");
        assert_eq!(all[0].kind, AlertKind::Dispatch);
        assert_eq!(s.recent_alerts(1_500, 10, 3_000).unwrap().len(), 1);
        assert_eq!(s.recent_alerts(0, 1, 3_000).unwrap()[0].id, new);
        // Expired: pending recipients count as expired.
        let later = s.recent_alerts(0, 10, 100_000).unwrap();
        assert_eq!(later[0].counts.expired, 2);
    }

    #[test]
    fn admin_actions_are_kept_newest_first() {
        let s = Store::in_memory().unwrap();
        for (i, what) in ["disconnect", "cancel-sos"].into_iter().enumerate() {
            s.record_admin_action(&AdminAction {
                at_ms: i as u64,
                operator: "duty-officer".into(),
                action: what.into(),
                target: "terminal 501".into(),
                outcome: "done".into(),
            })
            .unwrap();
        }
        let got = s.admin_actions(10).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].action, "cancel-sos");
        assert_eq!(got[1].operator, "duty-officer");
        assert_eq!(s.admin_actions(1).unwrap().len(), 1);
    }
}
