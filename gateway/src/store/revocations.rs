//! Revoked terminal credentials: a terminal whose handset was stolen or
//! lost is revoked here (by `ptt-gateway revoke`, or later the admin API),
//! and the running gateway reads the list every `auth.revocation_poll_ms`
//! and on SIGHUP: it refuses the terminal's `Hello` and closes its session
//! with `REVOKED`. Lifting the revocation (`unrevoke`) lets it back in.
//!
//! A revoked terminal's alerts waiting for it stay in the store.

use ptt_codec::TerminalId;
use rusqlite::{params, OptionalExtension};

use super::{Error, Store};

/// One revoked terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The terminal whose credential is revoked.
    pub terminal: TerminalId,
    /// When, ms since the Unix epoch.
    pub revoked_ms: u64,
    /// Why, as the operator said it (may be empty).
    pub reason: String,
    /// Who revoked it: an operator's name, or the tool.
    pub revoked_by: String,
}

impl Revocation {
    /// As a JSON object (`ptt-gateway revoked --format json`, the admin
    /// API).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "terminal": self.terminal.0,
            "revoked_ms": self.revoked_ms,
            "reason": self.reason,
            "revoked_by": self.revoked_by,
        })
    }
}

impl Store {
    /// Revokes `terminal`'s credential at `now_ms`. Returns `None` when it
    /// is newly revoked, or the revocation already in force (left as it
    /// was: the first reason and time are kept). Call from the CLI or an
    /// admin action; the running gateway picks it up on its next poll.
    pub fn revoke(
        &self,
        terminal: TerminalId,
        reason: &str,
        revoked_by: &str,
        now_ms: u64,
    ) -> Result<Option<Revocation>, Error> {
        let conn = self.lock();
        // One autocommit statement each, no read-then-write transaction: a
        // deferred transaction that read before the running gateway wrote
        // could not be upgraded and would fail at once with SQLITE_BUSY
        // instead of waiting out the busy timeout.
        loop {
            let inserted = conn.execute(
                "INSERT INTO revocation (terminal, revoked_ms, reason, revoked_by)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (terminal) DO NOTHING",
                params![terminal.0, now_ms as i64, reason, revoked_by],
            )?;
            if inserted == 1 {
                return Ok(None);
            }
            let existing = conn
                .query_row(
                    "SELECT revoked_ms, reason, revoked_by FROM revocation WHERE terminal = ?1",
                    [terminal.0],
                    |r| {
                        Ok(Revocation {
                            terminal,
                            revoked_ms: r.get::<_, i64>(0)? as u64,
                            reason: r.get(1)?,
                            revoked_by: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            // None: lifted in between by another connection; try again.
            if existing.is_some() {
                return Ok(existing);
            }
        }
    }

    /// Lifts `terminal`'s revocation; returns whether it was revoked. The
    /// running gateway lets it back in after its next poll.
    pub fn unrevoke(&self, terminal: TerminalId) -> Result<bool, Error> {
        let n = self
            .lock()
            .execute("DELETE FROM revocation WHERE terminal = ?1", [terminal.0])?;
        Ok(n > 0)
    }

    /// Every revocation in force, by terminal.
    pub fn revocations(&self) -> Result<Vec<Revocation>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT terminal, revoked_ms, reason, revoked_by FROM revocation ORDER BY terminal",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Revocation {
                terminal: TerminalId(r.get(0)?),
                revoked_ms: r.get::<_, i64>(1)? as u64,
                reason: r.get(2)?,
                revoked_by: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The revoked terminals only, in order: what the gateway polls (one
    /// read of the table's primary key).
    pub fn revoked_terminals(&self) -> Result<Vec<TerminalId>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT terminal FROM revocation ORDER BY terminal")?;
        let rows = stmt.query_map([], |r| Ok(TerminalId(r.get(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_is_kept_once_listed_and_lifted() {
        let store = Store::in_memory().expect("in-memory store");
        assert!(store.revocations().expect("readable").is_empty());
        assert_eq!(
            store
                .revoke(TerminalId(501), "stolen", "ops:li", 1_000)
                .expect("stored"),
            None
        );
        // Revoking again keeps the first revocation and says so.
        let again = store
            .revoke(TerminalId(501), "lost", "ops:wang", 2_000)
            .expect("stored")
            .expect("already revoked");
        assert_eq!(again.reason, "stolen");
        assert_eq!(again.revoked_ms, 1_000);
        store
            .revoke(TerminalId(300), "", "cli", 3_000)
            .expect("stored");
        assert_eq!(
            store.revoked_terminals().expect("readable"),
            [TerminalId(300), TerminalId(501)]
        );
        assert_eq!(
            store.revocations().expect("readable")[1],
            Revocation {
                terminal: TerminalId(501),
                revoked_ms: 1_000,
                reason: "stolen".into(),
                revoked_by: "ops:li".into(),
            }
        );
        assert!(store.unrevoke(TerminalId(501)).expect("lifted"));
        assert!(!store.unrevoke(TerminalId(501)).expect("nothing to lift"));
        assert_eq!(
            store.revoked_terminals().expect("readable"),
            [TerminalId(300)]
        );
    }

    #[test]
    fn a_second_connection_sees_a_revocation_at_once() {
        // The CLI revokes through its own connection while the gateway
        // runs: the gateway's next poll must see it (WAL, no restart).
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gateway.db");
        let gateway = Store::open(&path).expect("opened");
        assert!(gateway.revoked_terminals().expect("readable").is_empty());
        let cli = Store::open(&path).expect("opened beside it");
        cli.revoke(TerminalId(7), "test", "cli", 1).expect("stored");
        assert_eq!(
            gateway.revoked_terminals().expect("readable"),
            [TerminalId(7)]
        );
        cli.unrevoke(TerminalId(7)).expect("lifted");
        assert!(gateway.revoked_terminals().expect("readable").is_empty());
    }
}
