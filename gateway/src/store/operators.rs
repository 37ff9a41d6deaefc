//! Console operators and their signed-in sessions.
//!
//! An operator is a person at a command-room console: a name, an argon2id
//! password hash, and the console terminal of the org they sit at (what
//! they may see and command is that terminal's node and everything under
//! it). Created with `ptt-gateway operator add`. A sign-in makes a session:
//! a random token the browser presents (as its `Hello` credential over
//! WebTransport and as a Bearer token to the console's HTTP API), stored
//! here only as its SHA-256, so that a copy of the database signs no one
//! in.

use ptt_codec::TerminalId;
use rusqlite::{params, OptionalExtension};

use super::{Error, Store};

/// One operator, without the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Sign-in name.
    pub name: String,
    /// The console terminal the operator sits at.
    pub terminal: TerminalId,
    /// When the account was created, ms since the Unix epoch.
    pub created_ms: u64,
}

/// A signed-in console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 of the session's token.
    pub token_hash: [u8; 32],
    /// The operator signed in.
    pub operator: String,
    /// Their console terminal at sign-in.
    pub terminal: TerminalId,
    /// Signed in at, ms since the Unix epoch.
    pub created_ms: u64,
    /// Ends at, ms since the Unix epoch.
    pub expires_ms: u64,
}

impl Store {
    /// Creates operator `name` at console `terminal` with password hash
    /// `password` (a PHC string), or replaces the terminal and hash of an
    /// existing one. Returns whether it was new. Replacing ends the
    /// operator's sessions.
    pub fn put_operator(
        &self,
        name: &str,
        terminal: TerminalId,
        password: &str,
        now_ms: u64,
    ) -> Result<bool, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existed = tx
            .query_row("SELECT 1 FROM operator WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some();
        tx.execute(
            "INSERT INTO operator (name, terminal, password, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET terminal = ?2, password = ?3",
            params![name, terminal.0, password, now_ms as i64],
        )?;
        tx.execute("DELETE FROM console_session WHERE operator = ?1", [name])?;
        tx.commit()?;
        Ok(!existed)
    }

    /// Removes operator `name` and ends their sessions; whether it existed.
    pub fn remove_operator(&self, name: &str) -> Result<bool, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let removed = tx.execute("DELETE FROM operator WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM console_session WHERE operator = ?1", [name])?;
        tx.commit()?;
        Ok(removed == 1)
    }

    /// Every operator, by name.
    pub fn operators(&self) -> Result<Vec<Operator>, Error> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT name, terminal, created_ms FROM operator ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Operator {
                name: r.get(0)?,
                terminal: TerminalId(r.get(1)?),
                created_ms: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Operator `name` and their password hash, to check a sign-in.
    pub fn operator_password(&self, name: &str) -> Result<Option<(Operator, String)>, Error> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT terminal, created_ms, password FROM operator WHERE name = ?1",
                [name],
                |r| {
                    Ok((
                        Operator {
                            name: name.to_owned(),
                            terminal: TerminalId(r.get(0)?),
                            created_ms: r.get::<_, i64>(1)? as u64,
                        },
                        r.get(2)?,
                    ))
                },
            )
            .optional()?)
    }

    /// Stores a new session.
    pub fn put_console_session(&self, session: &ConsoleSession) -> Result<(), Error> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO console_session (token_hash, operator, terminal, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &session.token_hash[..],
                session.operator,
                session.terminal.0,
                session.created_ms as i64,
                session.expires_ms as i64
            ],
        )?;
        Ok(())
    }

    /// Ends the session whose token hashes to `token_hash`; whether it was
    /// there.
    pub fn remove_console_session(&self, token_hash: &[u8; 32]) -> Result<bool, Error> {
        let conn = self.lock();
        let removed = conn.execute(
            "DELETE FROM console_session WHERE token_hash = ?1",
            [&token_hash[..]],
        )?;
        Ok(removed == 1)
    }

    /// Every session not expired at `now_ms` (and deletes those that are).
    pub fn console_sessions(&self, now_ms: u64) -> Result<Vec<ConsoleSession>, Error> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM console_session WHERE expires_ms <= ?1",
            [now_ms as i64],
        )?;
        let mut stmt = conn.prepare(
            "SELECT token_hash, operator, terminal, created_ms, expires_ms FROM console_session",
        )?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(0)?;
            Ok(ConsoleSession {
                token_hash: hash.try_into().unwrap_or([0; 32]),
                operator: r.get(1)?,
                terminal: TerminalId(r.get(2)?),
                created_ms: r.get::<_, i64>(3)? as u64,
                expires_ms: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(hash: u8, expires_ms: u64) -> ConsoleSession {
        ConsoleSession {
            token_hash: [hash; 32],
            operator: "wang".into(),
            terminal: TerminalId(300),
            created_ms: 1,
            expires_ms,
        }
    }

    #[test]
    fn operators_and_sessions_round_trip() {
        let store = Store::in_memory().unwrap();
        assert!(store
            .put_operator("wang", TerminalId(300), "$argon2id$x", 5)
            .unwrap());
        store.put_console_session(&session(1, 100)).unwrap();
        store.put_console_session(&session(2, 50)).unwrap();
        let (op, hash) = store.operator_password("wang").unwrap().unwrap();
        assert_eq!(
            (op.terminal, hash.as_str()),
            (TerminalId(300), "$argon2id$x")
        );
        assert_eq!(store.operator_password("li").unwrap(), None);
        // Expired sessions are dropped when read.
        assert_eq!(store.console_sessions(60).unwrap(), vec![session(1, 100)]);
        assert!(store.remove_console_session(&[1; 32]).unwrap());
        assert!(!store.remove_console_session(&[1; 32]).unwrap());
        // A new password ends the operator's sessions.
        store.put_console_session(&session(3, 100)).unwrap();
        assert!(!store
            .put_operator("wang", TerminalId(301), "$argon2id$y", 6)
            .unwrap());
        assert!(store.console_sessions(0).unwrap().is_empty());
        assert_eq!(store.operators().unwrap()[0].terminal, TerminalId(301));
        assert!(store.remove_operator("wang").unwrap());
        assert!(store.operators().unwrap().is_empty());
    }
}
