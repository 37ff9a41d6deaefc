//! The durable store: an embedded SQLite database (WAL) in the data
//! directory. Anything acknowledged to a terminal is committed first.
//!
//! Calls block on disk I/O (an fsync per commit, `synchronous = FULL`): call
//! them from `tokio::task::spawn_blocking`. One connection behind a mutex:
//! writes are small and SQLite serialises writers anyway.

use std::path::Path;
use std::sync::Mutex;

use ptt_codec::{AlertBody, AlertKind, Location, ReceiptStatus, StatusCounts, TerminalId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{advance, InvalidReceipt, Step};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit one that has shipped: append.
const MIGRATIONS: &[&str] = &[
    // 1: alerts and their recipients.
    "CREATE TABLE alert (
        id INTEGER PRIMARY KEY,
        issuer INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        ttl_s INTEGER NOT NULL,
        title TEXT NOT NULL,
        text TEXT NOT NULL,
        lat_e7 INTEGER,
        lon_e7 INTEGER,
        address TEXT,
        target TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE recipient (
        alert INTEGER NOT NULL REFERENCES alert(id),
        terminal INTEGER NOT NULL,
        status INTEGER NOT NULL DEFAULT 0,
        delivered_ms INTEGER,
        read_ms INTEGER,
        accepted_ms INTEGER,
        rejected_ms INTEGER,
        reason TEXT,
        arrived_ms INTEGER,
        resolved_ms INTEGER,
        PRIMARY KEY (alert, terminal)
    ) WITHOUT ROWID;
    CREATE INDEX recipient_by_terminal ON recipient(terminal, status);",
    // 2: audit log of floor grants: who talked in which group, when, how long.
    "CREATE TABLE floor_grant (
        id INTEGER PRIMARY KEY,
        grp INTEGER NOT NULL,
        terminal INTEGER NOT NULL,
        burst INTEGER NOT NULL,
        class INTEGER NOT NULL,
        granted_ms INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL,
        ended_by TEXT NOT NULL
    );
    CREATE INDEX floor_grant_by_group ON floor_grant(grp, granted_ms);",
    // 3: who cancelled an alert (an SOS), and when.
    "ALTER TABLE alert ADD COLUMN cancelled_by INTEGER;
    ALTER TABLE alert ADD COLUMN cancelled_ms INTEGER;",
];

/// One burst, for the floor audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BurstRecord {
    /// The group.
    pub group: u32,
    /// Who talked.
    pub terminal: TerminalId,
    /// Burst id.
    pub burst: u16,
    /// Class code (0 normal, 1 imminent peril, 2 emergency).
    pub class: u8,
    /// Unix ms.
    pub granted_ms: u64,
    /// Unix ms.
    pub ended_ms: u64,
    /// "released", "left", "preempted", "burst_too_long", "revoked".
    pub ended_by: String,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer gateway.
    #[error("database schema version {0} is newer than this gateway knows ({1})")]
    TooNew(usize, usize),
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    /// Id.
    pub id: u64,
    /// Issuer.
    pub issuer: TerminalId,
    /// Content.
    pub body: AlertBody,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
}

/// A receipt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptIn {
    /// The alert.
    pub alert: u64,
    /// The recipient.
    pub terminal: TerminalId,
    /// Its new status.
    pub status: ReceiptStatus,
    /// When, Unix ms.
    pub at_ms: u64,
    /// Reason (rejections).
    pub reason: String,
}

/// What recording a receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// Stored; the recipient's status is now `status` (tell the issuer).
    Advanced {
        /// The alert's issuer.
        issuer: TerminalId,
        /// The new status.
        status: ReceiptStatus,
    },
    /// Already recorded; the stored status is `status`.
    Duplicate {
        /// The stored status.
        status: ReceiptStatus,
    },
    /// No such alert.
    UnknownAlert,
    /// The terminal is not a recipient.
    NotRecipient,
    /// Contradicts the recipient's history.
    Invalid(InvalidReceipt),
}

/// The gateway's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

fn status_column(s: ReceiptStatus) -> &'static str {
    match s {
        ReceiptStatus::Pending => "created",
        ReceiptStatus::Delivered => "delivered_ms",
        ReceiptStatus::Read => "read_ms",
        ReceiptStatus::Accepted => "accepted_ms",
        ReceiptStatus::Rejected => "rejected_ms",
        ReceiptStatus::Arrived => "arrived_ms",
        ReceiptStatus::Resolved => "resolved_ms",
    }
}

impl Store {
    /// Opens (creating if needed) `path`, in WAL mode, and migrates it.
    pub fn open(path: &Path) -> Result<Store, Error> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, Error> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit survives power loss, not only a process kill.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(Error::TooNew(version, MIGRATIONS.len()));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-statement leaves SQLite consistent (the transaction
        // rolls back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an alert and its recipients in one transaction; returns its id.
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
        let expires_ms = created_ms.saturating_add(u64::from(body.ttl_s) * 1000);
        let loc = body.location.as_ref();
        tx.execute(
            "INSERT INTO alert (issuer, kind, priority, ttl_s, title, text, lat_e7, lon_e7, address, target, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                issuer.0,
                body.kind.code(),
                body.priority,
                body.ttl_s,
                body.title,
                body.text,
                loc.map(|l| l.lat_e7),
                loc.map(|l| l.lon_e7),
                loc.map(|l| l.address.as_str()),
                target,
                created_ms as i64,
                expires_ms as i64,
            ],
        )?;
        let id = tx.last_insert_rowid() as u64;
        {
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO recipient (alert, terminal) VALUES (?1, ?2)")?;
            for r in recipients {
                insert.execute(params![id as i64, r.0])?;
            }
        }
        tx.commit()?;
        Ok(id)
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
        Ok(conn
            .query_row(&sql, [id as i64], Self::row_to_alert)
            .optional()?)
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
        Ok(rows.collect::<Result<_, _>>()?)
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

    /// Records a recipient's receipt at `at_ms`.
    pub fn record_receipt(
        &self,
        alert: u64,
        terminal: TerminalId,
        status: ReceiptStatus,
        at_ms: u64,
        reason: &str,
    ) -> Result<Receipt, Error> {
        let receipt = ReceiptIn {
            alert,
            terminal,
            status,
            at_ms,
            reason: reason.to_owned(),
        };
        let mut out = self.record_receipts(std::slice::from_ref(&receipt))?;
        Ok(out.pop().unwrap_or(Receipt::UnknownAlert))
    }

    /// Records many receipts in one transaction (one disk flush: group
    /// commit), in order; returns what each did.
    pub fn record_receipts(&self, receipts: &[ReceiptIn]) -> Result<Vec<Receipt>, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(receipts.len());
        for r in receipts {
            out.push(Self::apply_receipt(
                &tx, r.alert, r.terminal, r.status, r.at_ms, &r.reason,
            )?);
        }
        tx.commit()?;
        Ok(out)
    }

    fn apply_receipt(
        tx: &rusqlite::Transaction<'_>,
        alert: u64,
        terminal: TerminalId,
        status: ReceiptStatus,
        at_ms: u64,
        reason: &str,
    ) -> Result<Receipt, Error> {
        let Some(issuer) = tx
            .query_row(
                "SELECT issuer FROM alert WHERE id = ?1",
                [alert as i64],
                |r| r.get::<_, u32>(0),
            )
            .optional()?
        else {
            return Ok(Receipt::UnknownAlert);
        };
        let Some(current) = tx
            .query_row(
                "SELECT status FROM recipient WHERE alert = ?1 AND terminal = ?2",
                params![alert as i64, terminal.0],
                |r| r.get::<_, u8>(0),
            )
            .optional()?
        else {
            return Ok(Receipt::NotRecipient);
        };
        let current = ReceiptStatus::from_code(current).unwrap_or(ReceiptStatus::Pending);
        match advance(current, status) {
            Err(e) => Ok(Receipt::Invalid(e)),
            Ok(Step::Duplicate) => Ok(Receipt::Duplicate { status: current }),
            Ok(Step::Advance) => {
                let column = status_column(status);
                let sql = format!(
                    "UPDATE recipient SET status = ?1, {column} = ?2, reason = CASE WHEN ?3 = '' THEN reason ELSE ?3 END
                     WHERE alert = ?4 AND terminal = ?5"
                );
                tx.execute(
                    &sql,
                    params![
                        status.code(),
                        at_ms as i64,
                        reason,
                        alert as i64,
                        terminal.0
                    ],
                )?;
                Ok(Receipt::Advanced {
                    issuer: TerminalId(issuer),
                    status,
                })
            }
        }
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
                    b.ended_by
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
                ended_by: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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

    fn body(ttl_s: u32) -> AlertBody {
        AlertBody {
            kind: AlertKind::Dispatch,
            priority: 3,
            ttl_s,
            title: "两名男子试图拉车门".into(),
            text: "城南路165号，01:25".into(),
            location: Some(Location {
                lat_e7: 291_000_000,
                lon_e7: 1_196_500_000,
                address: "城南路165号".into(),
            }),
        }
    }

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

    #[test]
    fn the_floor_audit_log_keeps_bursts_in_order() {
        let s = Store::in_memory().unwrap();
        let b = |terminal: u32, granted_ms: u64, ended_by: &str| BurstRecord {
            group: 5,
            terminal: TerminalId(terminal),
            burst: 1,
            class: 0,
            granted_ms,
            ended_ms: granted_ms + 4_000,
            ended_by: ended_by.into(),
        };
        s.record_bursts(&[b(501, 1_000, "released"), b(504, 6_000, "preempted")])
            .unwrap();
        s.record_bursts(&[b(300, 9_000, "burst_too_long")]).unwrap();
        let all = s.bursts(5, 0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.terminal.0).collect::<Vec<_>>(),
            vec![501, 504, 300]
        );
        assert_eq!(s.bursts(5, 5_000).unwrap().len(), 2);
        assert!(s.bursts(6, 0).unwrap().is_empty());
    }

    #[test]
    fn a_reopened_database_keeps_everything_and_migrates_once() {
        let dir = std::env::temp_dir().join(format!("ptt-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.db");
        let id = {
            let s = Store::open(&path).unwrap();
            s.create_alert(TerminalId(1), &body(600), "t", 0, &[TerminalId(2)])
                .unwrap()
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.alert(id).unwrap().unwrap().body, body(600));
        let version: usize = s
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let mode: String = s
            .lock()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
