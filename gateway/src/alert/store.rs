//! The durable store: an embedded SQLite database (WAL) in the data
//! directory. Anything acknowledged to a terminal is committed first.
//!
//! Calls block on disk I/O (an fsync per commit, `synchronous = FULL`): call
//! them from `tokio::task::spawn_blocking`. One connection behind a mutex:
//! writes are small and SQLite serialises writers anyway.

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use ptt_codec::{
    AlertBody, AlertKind, AttachmentRef, Location, ReceiptStatus, StatusCounts, TerminalId,
};
use rusqlite::{params, Connection, OptionalExtension};

use super::{advance, BurstRecord, InvalidReceipt, Step};

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
    // 4: attachments (photos) and which alerts carry them; drill reports.
    "CREATE TABLE attachment (
        id INTEGER PRIMARY KEY,
        owner INTEGER NOT NULL,
        mime TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE alert_attachment (
        alert INTEGER NOT NULL REFERENCES alert(id),
        attachment INTEGER NOT NULL REFERENCES attachment(id),
        position INTEGER NOT NULL,
        PRIMARY KEY (alert, attachment)
    ) WITHOUT ROWID;
    CREATE INDEX alert_attachment_by_attachment ON alert_attachment(attachment);
    CREATE TABLE drill_report (
        id INTEGER PRIMARY KEY,
        alert INTEGER NOT NULL REFERENCES alert(id),
        generated_ms INTEGER NOT NULL,
        json TEXT NOT NULL
    );
    CREATE INDEX drill_report_by_alert ON drill_report(alert, generated_ms);",
];

/// A stored attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Id.
    pub id: u64,
    /// Who uploaded it.
    pub owner: TerminalId,
    /// Media type.
    pub mime: String,
    /// Content.
    pub data: Bytes,
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
    /// An alert references an attachment that does not exist or that its
    /// issuer did not upload. Nothing was stored.
    #[error("attachment {0} is unknown or not yours")]
    UnknownAttachment(u64),
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
        // `ptt-gateway drill-report` may write beside a running gateway.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
        for (position, a) in body.attachments.iter().enumerate() {
            let owner: Option<u32> = tx
                .query_row(
                    "SELECT owner FROM attachment WHERE id = ?1",
                    [a.id as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if owner != Some(issuer.0) {
                // Dropping the transaction rolls the alert back.
                return Err(Error::UnknownAttachment(a.id));
            }
            tx.execute(
                "INSERT OR IGNORE INTO alert_attachment (alert, attachment, position) VALUES (?1, ?2, ?3)",
                params![id as i64, a.id as i64, position as i64],
            )?;
        }
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

    /// Stores an uploaded attachment; returns its id.
    pub fn put_attachment(
        &self,
        owner: TerminalId,
        mime: &str,
        data: &[u8],
        created_ms: u64,
    ) -> Result<u64, Error> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO attachment (owner, mime, size, data, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner.0, mime, data.len() as i64, data, created_ms as i64],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// The attachments' size and media type as alerts carry them, in
    /// order; `None` if one does not exist or `owner` did not upload it.
    pub fn attachment_refs(
        &self,
        owner: TerminalId,
        ids: &[u64],
    ) -> Result<Result<Vec<AttachmentRef>, u64>, Error> {
        let conn = self.lock();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = conn
                .query_row(
                    "SELECT size, mime FROM attachment WHERE id = ?1 AND owner = ?2",
                    params![*id as i64, owner.0],
                    |r| {
                        Ok(AttachmentRef {
                            id: *id,
                            size: r.get(0)?,
                            mime: r.get(1)?,
                        })
                    },
                )
                .optional()?;
            match row {
                Some(a) => out.push(a),
                None => return Ok(Err(*id)),
            }
        }
        Ok(Ok(out))
    }

    /// Attachment `id` if `terminal` may fetch it: its uploader, or a
    /// recipient or issuer of an alert that carries it. Returns the alert
    /// it is fetched through (0 for its uploader before any alert).
    pub fn fetchable_attachment(
        &self,
        terminal: TerminalId,
        id: u64,
    ) -> Result<Option<(u64, Attachment)>, Error> {
        let conn = self.lock();
        let Some(attachment) = conn
            .query_row(
                "SELECT owner, mime, data FROM attachment WHERE id = ?1",
                [id as i64],
                |r| {
                    Ok(Attachment {
                        id,
                        owner: TerminalId(r.get(0)?),
                        mime: r.get(1)?,
                        data: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    })
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let through: Option<i64> = conn
            .query_row(
                "SELECT aa.alert FROM alert_attachment aa
                 JOIN alert a ON a.id = aa.alert
                 LEFT JOIN recipient r ON r.alert = aa.alert AND r.terminal = ?2
                 WHERE aa.attachment = ?1 AND (r.terminal IS NOT NULL OR a.issuer = ?2)
                 ORDER BY aa.alert LIMIT 1",
                params![id as i64, terminal.0],
                |r| r.get(0),
            )
            .optional()?;
        match through {
            Some(alert) => Ok(Some((alert as u64, attachment))),
            None if attachment.owner == terminal => Ok(Some((0, attachment))),
            None => Ok(None),
        }
    }

    fn attachments_of(conn: &Connection, alert: u64) -> rusqlite::Result<Vec<AttachmentRef>> {
        let mut stmt = conn.prepare_cached(
            "SELECT t.id, t.size, t.mime FROM alert_attachment aa JOIN attachment t ON t.id = aa.attachment
             WHERE aa.alert = ?1 ORDER BY aa.position",
        )?;
        let rows = stmt.query_map([alert as i64], |r| {
            Ok(AttachmentRef {
                id: r.get::<_, i64>(0)? as u64,
                size: r.get(1)?,
                mime: r.get(2)?,
            })
        })?;
        rows.collect()
    }

    /// Every recipient's drill progress: first receipt of any kind,
    /// acceptance, arrival (Unix ms).
    pub fn drill_progress(
        &self,
        alert: u64,
    ) -> Result<Vec<ptt_gateway_core::drill::Progress>, Error> {
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
            Ok(ptt_gateway_core::drill::Progress {
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
    use crate::alert::EndedBy;

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
            attachments: Vec::new(),
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

    #[test]
    fn attachments_are_fetched_only_through_their_alerts() {
        let s = Store::in_memory().unwrap();
        let (console, member, stranger) = (TerminalId(1), TerminalId(2), TerminalId(3));
        let photo = vec![0xffu8; 300_000];
        let a = s.put_attachment(console, "image/jpeg", &photo, 5).unwrap();
        // Before any alert: only its uploader.
        assert_eq!(s.fetchable_attachment(console, a).unwrap().unwrap().0, 0);
        assert!(s.fetchable_attachment(member, a).unwrap().is_none());

        let refs = s.attachment_refs(console, &[a]).unwrap().unwrap();
        assert_eq!(
            (refs[0].size, refs[0].mime.as_str()),
            (300_000, "image/jpeg")
        );
        assert_eq!(s.attachment_refs(stranger, &[a]).unwrap(), Err(a));
        let mut with_photo = body(600);
        with_photo.attachments = refs;
        let id = s
            .create_alert(console, &with_photo, "t", 10, &[member])
            .unwrap();
        let (through, got) = s.fetchable_attachment(member, a).unwrap().unwrap();
        assert_eq!((through, got.data.len(), got.owner), (id, 300_000, console));
        assert!(s.fetchable_attachment(stranger, a).unwrap().is_none());
        // Alerts read back carry their attachments (store and forward too).
        assert_eq!(s.alert(id).unwrap().unwrap().body, with_photo);
        assert_eq!(s.undelivered(member, 11).unwrap()[0].body, with_photo);
    }

    #[test]
    fn an_alert_with_a_foreign_attachment_stores_nothing() {
        let s = Store::in_memory().unwrap();
        let a = s
            .put_attachment(TerminalId(9), "image/png", b"png", 1)
            .unwrap();
        let mut b = body(600);
        b.attachments = vec![AttachmentRef {
            id: a,
            size: 3,
            mime: "image/png".into(),
        }];
        let err = s
            .create_alert(TerminalId(1), &b, "t", 1, &[TerminalId(2)])
            .unwrap_err();
        assert!(matches!(err, Error::UnknownAttachment(x) if x == a));
        assert!(s.undelivered(TerminalId(2), 2).unwrap().is_empty());
        let alerts: i64 = s
            .lock()
            .query_row("SELECT count(*) FROM alert", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alerts, 0);
    }

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
