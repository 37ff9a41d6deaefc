//! The durable store: an embedded SQLite database (WAL) in the data
//! directory. Anything acknowledged to a terminal is committed first.
//!
//! Calls block on disk I/O (an fsync per commit, `synchronous = FULL`): call
//! them from `tokio::task::spawn_blocking`. One connection behind a mutex:
//! writes are small and SQLite serialises writers anyway.
//!
//! One file per group of tables, each adding methods to [`Store`] and
//! returning the core's row types: `schema` (migrations), `alerts`
//! (alerts, recipients, cancellation, status), `receipts`, `attachments`,
//! `audit` (floor grants), `drills` (progress and saved reports) and `sos`
//! (the active SOS of each terminal), `recordings` (the index of recorded
//! talk bursts);
//! `files` keeps the data directory and the database files private.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ptt_codec::{AlertKind, ErrorCode};
use rusqlite::Connection;

pub use ptt_gateway_core::alert::{Attachment, Receipt, ReceiptIn, StoredAlert};

pub use alerts::CLUSTER_IDS;
pub use attachments::Quota;
pub use files::create_data_dir;
pub use operations::{AdminAction, AlertSummary};
pub use operators::{ConsoleSession, Operator};
pub use retention::{Cutoffs, Retired};
pub use revocations::Revocation;
use schema::MIGRATIONS;

mod alerts;
mod attachments;
mod audit;
mod drills;
mod files;
mod operations;
mod operators;
mod receipts;
mod recordings;
mod retention;
mod revocations;
mod schema;
mod sos;

pub use recordings::{Recording, RecordingQuery};

/// Errors of the store. Database failures are the gateway's fault
/// ([`ErrorCode::Internal`]); the other variants refuse a request and map to
/// their own wire code through [`Error::to_code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed (disk, corruption, a value that does not decode).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory or a database file could not be created or its
    /// mode narrowed.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database was written by a newer gateway: refuse to open it
    /// rather than misread it.
    #[error("database schema version {found} is newer than this gateway knows ({known})")]
    TooNew {
        /// The database's `user_version`.
        found: usize,
        /// The migrations this gateway has.
        known: usize,
    },
    /// An alert references an attachment that does not exist or that its
    /// issuer did not upload. Nothing was stored.
    #[error("attachment {0} is unknown or not yours")]
    UnknownAttachment(u64),
    /// An upload would take its terminal's unused uploads over their
    /// quota. Nothing was stored.
    #[error("{uploads} unused uploads of {bytes} bytes already: over the quota")]
    OverQuota {
        /// The terminal's unused uploads.
        uploads: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// No alert has this id.
    #[error("no alert {0}")]
    UnknownAlert(u64),
    /// A drill report was asked for an alert of another kind.
    #[error("alert {alert} is a {kind:?}, not a drill")]
    NotADrill {
        /// The alert.
        alert: u64,
        /// Its kind.
        kind: AlertKind,
    },
}

impl Error {
    /// The stable wire code for a terminal whose request failed this way.
    pub fn to_code(&self) -> ErrorCode {
        match self {
            Error::UnknownAttachment(_) => ErrorCode::UnknownAttachment,
            Error::UnknownAlert(_) => ErrorCode::UnknownAlert,
            Error::OverQuota { .. } => ErrorCode::OverLimit,
            Error::NotADrill { .. } => ErrorCode::NotADrill,
            _ if self.is_full() => ErrorCode::StorageFull,
            Error::Sqlite(_) | Error::Io { .. } | Error::TooNew { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the request was refused (the requester's mistake, worth
    /// telling them) rather than the database failing (worth logging).
    pub fn is_refusal(&self) -> bool {
        !matches!(self.to_code(), ErrorCode::Internal | ErrorCode::StorageFull)
    }

    /// The error SQLite gives when the disk is full, for answering
    /// several requests that one failed write refused (a batch of
    /// receipts): the error itself is not `Clone`.
    pub fn full() -> Self {
        Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ))
    }

    /// Whether SQLite refused the write because the disk (or the
    /// database's page limit) is full: nothing was stored. The disk watch
    /// has the alarm; the caller answers `STORAGE_FULL` and counts it
    /// (`store_full`).
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// The gateway's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `path`, in WAL mode, and migrates it.
    /// The database and its `-wal` and `-shm` files are kept at mode 0600
    /// (see `files`).
    pub fn open(path: &Path) -> Result<Store, Error> {
        files::before_open(path)?;
        let store = Self::init(Connection::open(path)?)?;
        files::after_open(path)?;
        Ok(store)
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
            return Err(Error::TooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
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

    /// Test hook: caps the database at the pages it has now
    /// (`PRAGMA max_page_count`) and fills the alert table's last page
    /// with empty alerts of issuer 0, so that the next alert fails with
    /// `SQLITE_FULL` as on a full disk.
    #[cfg(test)]
    pub(crate) fn fill_up(&self) {
        let conn = self.lock();
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .expect("page_count is readable");
        conn.pragma_update(None, "max_page_count", pages)
            .expect("max_page_count is settable");
        loop {
            let padded = conn.execute(
                "INSERT INTO alert (issuer, kind, priority, ttl_s, title, text, target, created_ms, expires_ms)
                 VALUES (0, 0, 0, 0, '', '', '', 0, 0)",
                [],
            );
            match padded.map_err(Error::from) {
                Ok(_) => {}
                Err(e) if e.is_full() => break,
                Err(e) => panic!("padding the test database failed: {e}"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-statement leaves SQLite consistent (the transaction
        // rolls back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::{AlertBody, AlertKind, Location, TerminalId};

    #[test]
    fn errors_map_to_stable_wire_codes() {
        assert_eq!(
            Error::UnknownAttachment(1).to_code(),
            ErrorCode::UnknownAttachment
        );
        assert_eq!(Error::UnknownAlert(1).to_code(), ErrorCode::UnknownAlert);
        let not_a_drill = Error::NotADrill {
            alert: 7,
            kind: AlertKind::Notice,
        };
        assert_eq!(not_a_drill.to_code(), ErrorCode::NotADrill);
        assert_eq!(not_a_drill.to_string(), "alert 7 is a Notice, not a drill");
        assert!(not_a_drill.is_refusal());
        let db = Error::from(rusqlite::Error::InvalidQuery);
        assert_eq!(db.to_code(), ErrorCode::Internal);
        assert!(!db.is_refusal());
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_stores_nothing() {
        let s = Store::in_memory().unwrap();
        s.create_alert(TerminalId(1), &body(600), "t", 0, &[TerminalId(2)])
            .unwrap();
        s.fill_up();
        let recipients: Vec<TerminalId> = (0..2000).map(TerminalId).collect();
        let err = s
            .create_alert(TerminalId(1), &body(600), "t", 1, &recipients)
            .unwrap_err();
        assert!(err.is_full(), "{err}");
        assert_eq!(err.to_code(), ErrorCode::StorageFull);
        assert!(!err.is_refusal(), "a full disk is the gateway's, logged");
        assert!(Error::full().is_full());
        assert!(!Error::UnknownAlert(1).is_full());
        assert!(!Error::from(rusqlite::Error::InvalidQuery).is_full());
        // The refused alert left nothing: no alert row, no recipients.
        let count = |sql: &str| -> i64 { s.lock().query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM alert WHERE issuer = 1"), 1);
        assert_eq!(count("SELECT count(*) FROM recipient"), 1);
    }

    /// A dispatch alert with a location and `ttl_s`, for the store's tests.
    pub(super) fn body(ttl_s: u32) -> AlertBody {
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
