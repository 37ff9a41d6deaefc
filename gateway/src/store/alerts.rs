//! Alerts and their recipients: create, read back, what is pending for
//! whom, cancellation and the issuer's status summary.

use ptt_codec::{AlertBody, AlertKind, AttachmentRef, Location, StatusCounts, TerminalId};
use rusqlite::{params, OptionalExtension};

use super::{Error, Store, StoredAlert};

/// An alert to insert, with the id it takes.
struct NewAlert<'a> {
    id: u64,
    issuer: TerminalId,
    body: &'a AlertBody,
    target: &'a str,
    created_ms: u64,
    recipients: &'a [TerminalId],
}

/// Alert ids from this one up name alerts shared by a cluster's nodes:
/// `CLUSTER_IDS` plus the sequence of the alert's record in the cluster's
/// JetStream stream (`crate::cluster::alerts`), the same on every node.
/// Alerts a node makes alone (single node, SOS, drills) take ids below it,
/// so the two never collide. 2^40: a trillion local alerts, and cluster
/// ids stay below 2^53, exact in a browser console's JavaScript numbers.
pub const CLUSTER_IDS: u64 = 1 << 40;

/// What to do with an alert's attachments that are not in this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Refuse the alert: its issuer names an upload that is not theirs.
    Refuse,
    /// Leave them out: a replicated alert whose photos stayed on the
    /// issuer's node.
    Skip,
}

impl Store {
    /// Stores an alert and its recipients in one transaction; returns its
    /// id, below [`CLUSTER_IDS`].
    pub fn create_alert(
        &self,
        issuer: TerminalId,
        body: &AlertBody,
        target: &str,
        created_ms: u64,
        recipients: &[TerminalId],
    ) -> Result<u64, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // What SQLite itself would pick (the largest id plus one), among
        // the ids that are not the cluster's.
        let id = tx.query_row(
            "SELECT coalesce(max(id), 0) + 1 FROM alert WHERE id < ?1",
            [CLUSTER_IDS as i64],
            |r| r.get::<_, i64>(0),
        )? as u64;
        let alert = NewAlert {
            id,
            issuer,
            body,
            target,
            created_ms,
            recipients,
        };
        Self::insert_alert(&tx, &alert, Missing::Refuse)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores alert `id` of the cluster (at least [`CLUSTER_IDS`]) and its
    /// recipients, unless it is stored already. Returns `None` if it was,
    /// else the attachments it carries in this store: those of
    /// `body.attachments` whose content is here (the issuer's node). Call
    /// for every alert record the cluster's stream delivers, and once on
    /// the issuer's node after the stream acknowledged it: whichever call
    /// stores it delivers it.
    pub fn store_cluster_alert(
        &self,
        id: u64,
        issuer: TerminalId,
        body: &AlertBody,
        target: &str,
        created_ms: u64,
        recipients: &[TerminalId],
    ) -> Result<Option<Vec<AttachmentRef>>, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let alert = NewAlert {
            id,
            issuer,
            body,
            target,
            created_ms,
            recipients,
        };
        let kept = Self::insert_alert(&tx, &alert, Missing::Skip)?;
        tx.commit()?;
        Ok(kept)
    }

    /// Inserts `a` unless its id is taken (then `None`), its attachments
    /// (each only if stored, not pending and the issuer's; what is
    /// missing refused or skipped) and its recipients. Returns the
    /// attachments it carries.
    fn insert_alert(
        tx: &rusqlite::Transaction<'_>,
        a: &NewAlert<'_>,
        missing: Missing,
    ) -> Result<Option<Vec<AttachmentRef>>, Error> {
        let body = a.body;
        let expires_ms = a.created_ms.saturating_add(u64::from(body.ttl_s) * 1000);
        let loc = body.location.as_ref();
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO alert (id, issuer, kind, priority, ttl_s, title, text, lat_e7, lon_e7, address, target, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                a.id as i64,
                a.issuer.0,
                body.kind.code(),
                body.priority,
                body.ttl_s,
                body.title,
                body.text,
                loc.map(|l| l.lat_e7),
                loc.map(|l| l.lon_e7),
                loc.map(|l| l.address.as_str()),
                a.target,
                a.created_ms as i64,
                expires_ms as i64,
            ],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let mut kept = Vec::with_capacity(body.attachments.len());
        for (position, att) in body.attachments.iter().enumerate() {
            let owner: Option<u32> = tx
                .query_row(
                    "SELECT owner FROM attachment WHERE id = ?1 AND pending = 0",
                    [att.id as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if owner != Some(a.issuer.0) {
                match missing {
                    // Dropping the transaction rolls the alert back.
                    Missing::Refuse => return Err(Error::UnknownAttachment(att.id)),
                    Missing::Skip => continue,
                }
            }
            tx.execute(
                "INSERT OR IGNORE INTO alert_attachment (alert, attachment, position) VALUES (?1, ?2, ?3)",
                params![a.id as i64, att.id as i64, position as i64],
            )?;
            kept.push(att.clone());
        }
        {
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO recipient (alert, terminal) VALUES (?1, ?2)")?;
            for r in a.recipients {
                insert.execute(params![a.id as i64, r.0])?;
            }
        }
        Ok(Some(kept))
    }

    fn row_to_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlert> {
        let lat: Option<i32> = r.get(6)?;
        let lon: Option<i32> = r.get(7)?;
        let address: Option<String> = r.get(8)?;
        let kind: u8 = r.get(2)?;
        Ok(StoredAlert {
            id: r.get::<_, i64>(0)? as u64,
            issuer: TerminalId(r.get(1)?),
            body: AlertBody {
                kind: AlertKind::from_code(kind).unwrap_or(AlertKind::Notice),
                priority: r.get(3)?,
                ttl_s: r.get(9)?,
                title: r.get(4)?,
                text: r.get(5)?,
                location: match (lat, lon) {
                    (Some(lat_e7), Some(lon_e7)) => Some(Location {
                        lat_e7,
                        lon_e7,
                        address: address.unwrap_or_default(),
                    }),
                    _ => None,
                },
                attachments: Vec::new(),
            },
            created_ms: r.get::<_, i64>(10)? as u64,
            expires_ms: r.get::<_, i64>(11)? as u64,
        })
    }

    const ALERT_COLUMNS: &'static str =
        "a.id, a.issuer, a.kind, a.priority, a.title, a.text, a.lat_e7, a.lon_e7, a.address, a.ttl_s, a.created_ms, a.expires_ms";

    /// One alert.
    pub fn alert(&self, id: u64) -> Result<Option<StoredAlert>, Error> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {} FROM alert a WHERE a.id = ?1",
            Self::ALERT_COLUMNS
        );
        let Some(mut alert) = conn
            .query_row(&sql, [id as i64], Self::row_to_alert)
            .optional()?
        else {
            return Ok(None);
        };
        alert.body.attachments = Self::attachments_of(&conn, id)?;
        Ok(Some(alert))
    }

    /// Alerts `terminal` has not acknowledged yet and that have not expired
    /// at `now_ms`, oldest first: what to deliver when it comes online.
    pub fn undelivered(
        &self,
        terminal: TerminalId,
        now_ms: u64,
    ) -> Result<Vec<StoredAlert>, Error> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {} FROM recipient r JOIN alert a ON a.id = r.alert
             WHERE r.terminal = ?1 AND r.status = 0 AND a.expires_ms > ?2 AND a.cancelled_by IS NULL
             ORDER BY a.id",
            Self::ALERT_COLUMNS
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![terminal.0, now_ms as i64], Self::row_to_alert)?;
        let mut alerts: Vec<StoredAlert> = rows.collect::<Result<_, _>>()?;
        for a in &mut alerts {
            a.body.attachments = Self::attachments_of(&conn, a.id)?;
        }
        Ok(alerts)
    }

    /// Terminals with at least one alert not yet delivered and not expired
    /// at `now_ms`: whom store-and-forward must look up on connect.
    pub fn terminals_with_pending(&self, now_ms: u64) -> Result<Vec<TerminalId>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT r.terminal FROM recipient r JOIN alert a ON a.id = r.alert
             WHERE r.status = 0 AND a.expires_ms > ?1 AND a.cancelled_by IS NULL",
        )?;
        let rows = stmt.query_map([now_ms as i64], |r| Ok(TerminalId(r.get(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks an alert cancelled by `by` at `at_ms`; false if it was already
    /// cancelled (the first cancel is kept) or does not exist.
    pub fn cancel(&self, alert: u64, by: TerminalId, at_ms: u64) -> Result<bool, Error> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE alert SET cancelled_by = ?1, cancelled_ms = ?2 WHERE id = ?3 AND cancelled_by IS NULL",
            params![by.0, at_ms as i64, alert as i64],
        )?;
        Ok(n == 1)
    }

    /// Who cancelled an alert, and when.
    pub fn cancelled(&self, alert: u64) -> Result<Option<(TerminalId, u64)>, Error> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT cancelled_by, cancelled_ms FROM alert WHERE id = ?1 AND cancelled_by IS NOT NULL",
                [alert as i64],
                |r| Ok((TerminalId(r.get(0)?), r.get::<_, i64>(1)? as u64)),
            )
            .optional()?;
        Ok(row)
    }

    /// Issuer, recipient count and counts by status of an alert at `now_ms`
    /// (pending recipients of an expired alert count as expired).
    pub fn status(
        &self,
        alert: u64,
        now_ms: u64,
    ) -> Result<Option<(TerminalId, u32, StatusCounts)>, Error> {
        let conn = self.lock();
        let Some((issuer, expires_ms)) = conn
            .query_row(
                "SELECT issuer, expires_ms FROM alert WHERE id = ?1",
                [alert as i64],
                |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut counts = StatusCounts::default();
        let mut total = 0u32;
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM recipient WHERE alert = ?1 GROUP BY status")?;
        let rows = stmt.query_map([alert as i64], |r| {
            Ok((r.get::<_, u8>(0)?, r.get::<_, u32>(1)?))
        })?;
        for row in rows {
            let (status, n) = row?;
            total += n;
            if status == 0 && expires_ms <= now_ms {
                counts.expired += n;
            } else if let Some(slot) = counts.by_status.get_mut(usize::from(status)) {
                *slot += n;
            }
        }
        Ok(Some((TerminalId(issuer), total, counts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::body;
    use crate::store::Receipt;
    use ptt_codec::ReceiptStatus;

    #[test]
    fn alerts_round_trip_and_wait_for_their_recipients() {
        let s = Store::in_memory().unwrap();
        let id = s
            .create_alert(
                TerminalId(300),
                &body(60),
                "group 5",
                1_000,
                &[TerminalId(501), TerminalId(502)],
            )
            .unwrap();
        let stored = s.alert(id).unwrap().unwrap();
        assert_eq!(stored.body, body(60));
        assert_eq!((stored.created_ms, stored.expires_ms), (1_000, 61_000));
        assert_eq!(s.undelivered(TerminalId(501), 2_000).unwrap().len(), 1);
        assert!(
            s.undelivered(TerminalId(501), 61_000).unwrap().is_empty(),
            "expired"
        );
        assert!(s.undelivered(TerminalId(999), 2_000).unwrap().is_empty());

        let r = s
            .record_receipt(id, TerminalId(501), ReceiptStatus::Delivered, 2_000, "")
            .unwrap();
        assert_eq!(
            r,
            Receipt::Advanced {
                issuer: TerminalId(300),
                status: ReceiptStatus::Delivered
            }
        );
        assert!(s.undelivered(TerminalId(501), 2_000).unwrap().is_empty());
        let r = s
            .record_receipt(id, TerminalId(501), ReceiptStatus::Delivered, 2_500, "")
            .unwrap();
        assert_eq!(
            r,
            Receipt::Duplicate {
                status: ReceiptStatus::Delivered
            }
        );
        s.record_receipt(
            id,
            TerminalId(502),
            ReceiptStatus::Rejected,
            3_000,
            "不在现场",
        )
        .unwrap();
        assert!(matches!(
            s.record_receipt(id, TerminalId(502), ReceiptStatus::Accepted, 3_100, "")
                .unwrap(),
            Receipt::Invalid(_)
        ));
        assert_eq!(
            s.record_receipt(id, TerminalId(503), ReceiptStatus::Read, 1, "")
                .unwrap(),
            Receipt::NotRecipient
        );
        assert_eq!(
            s.record_receipt(id + 9, TerminalId(501), ReceiptStatus::Read, 1, "")
                .unwrap(),
            Receipt::UnknownAlert
        );

        let (issuer, total, counts) = s.status(id, 4_000).unwrap().unwrap();
        assert_eq!((issuer, total), (TerminalId(300), 2));
        assert_eq!(
            counts.by_status[ReceiptStatus::Delivered.code() as usize],
            1
        );
        assert_eq!(counts.by_status[ReceiptStatus::Rejected.code() as usize], 1);
        assert!(s.status(id + 9, 0).unwrap().is_none());
    }

    #[test]
    fn cluster_alerts_are_stored_once_and_local_ids_stay_below_theirs() {
        let s = Store::in_memory().unwrap();
        let guard = [TerminalId(501)];
        let first = s
            .create_alert(TerminalId(300), &body(60), "t", 1_000, &guard)
            .unwrap();
        assert_eq!(
            first, 1,
            "a single node numbers alerts from 1, as SQLite did"
        );
        let shared = CLUSTER_IDS + 7;
        let stored = s
            .store_cluster_alert(shared, TerminalId(300), &body(60), "t", 1_000, &guard)
            .unwrap();
        assert_eq!(stored, Some(Vec::new()));
        assert_eq!(
            s.store_cluster_alert(shared, TerminalId(300), &body(60), "t", 1_000, &guard)
                .unwrap(),
            None,
            "a redelivered record stores nothing"
        );
        // SQLite alone would have taken CLUSTER_IDS + 8, the id of the
        // cluster's next alert.
        let local = s
            .create_alert(TerminalId(300), &body(60), "t", 2_000, &guard)
            .unwrap();
        assert_eq!(local, 2);
        let waiting: Vec<u64> = s
            .undelivered(TerminalId(501), 3_000)
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(waiting, [1, 2, shared]);
        s.record_receipt(shared, TerminalId(501), ReceiptStatus::Delivered, 3_000, "")
            .unwrap();
        assert_eq!(s.undelivered(TerminalId(501), 3_000).unwrap().len(), 2);
    }

    #[test]
    fn a_cluster_alert_carries_only_the_photos_this_node_holds() {
        let s = Store::in_memory().unwrap();
        let console = TerminalId(300);
        let here = s.put_attachment(console, "image/jpeg", b"jpeg", 1).unwrap();
        let theirs = s
            .put_attachment(TerminalId(9), "image/jpeg", b"x", 1)
            .unwrap();
        let mut with_photos = body(60);
        let photo = |id| ptt_codec::AttachmentRef {
            id,
            size: 4,
            mime: "image/jpeg".into(),
        };
        with_photos.attachments = vec![photo(here), photo(theirs), photo(9_999)];
        let id = CLUSTER_IDS + 1;
        let kept = s
            .store_cluster_alert(id, console, &with_photos, "t", 10, &[TerminalId(501)])
            .unwrap()
            .unwrap();
        assert_eq!(kept, vec![photo(here)]);
        assert_eq!(s.alert(id).unwrap().unwrap().body.attachments, kept);
        // A local alert naming another's upload is still refused whole.
        assert!(matches!(
            s.create_alert(console, &with_photos, "t", 10, &[TerminalId(501)]),
            Err(Error::UnknownAttachment(a)) if a == theirs
        ));
    }

    #[test]
    fn pending_recipients_of_an_expired_alert_count_as_expired() {
        let s = Store::in_memory().unwrap();
        let id = s
            .create_alert(
                TerminalId(1),
                &body(1),
                "t",
                0,
                &[TerminalId(2), TerminalId(3)],
            )
            .unwrap();
        s.record_receipt(id, TerminalId(2), ReceiptStatus::Delivered, 500, "")
            .unwrap();
        let (_, _, counts) = s.status(id, 5_000).unwrap().unwrap();
        assert_eq!((counts.expired, counts.by_status[1]), (1, 1));
    }
}
