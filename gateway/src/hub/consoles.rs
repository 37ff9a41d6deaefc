//! Signed-in browser consoles: their sessions in memory (the store's
//! `console_session` table, read at start), checked at every console
//! `Hello` and every call of the console's HTTP API; and the bounds on
//! sign-in attempts.
//!
//! A session is found by the SHA-256 of its token, which the store keeps;
//! the token itself only the browser has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use ptt_codec::TerminalId;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::store::ConsoleSession;

/// Failed sign-ins are counted per name and per address over this window.
pub(crate) const FAILURE_WINDOW_MS: u64 = 15 * 60 * 1000;

/// The most names and addresses whose failures are remembered; beyond,
/// the oldest windows are forgotten first.
const MAX_TRACKED: usize = 4096;

/// The SHA-256 of a session token: how sessions are kept and found.
pub(crate) fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The signed-in console sessions.
#[derive(Debug)]
pub(crate) struct Consoles {
    sessions: RwLock<HashMap<[u8; 32], ConsoleSession>>,
    /// Password checks running at once: argon2 costs ~20 MiB and tens of
    /// milliseconds each, so a flood of sign-ins queues here instead of
    /// taking the machine.
    checks: Arc<Semaphore>,
    /// Failed sign-ins per name and per address within the window.
    failures: Mutex<HashMap<Attempter, Failures>>,
    max_failures: u32,
}

/// Who failed to sign in: a name tried, or an address it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Attempter {
    /// An operator name.
    Name(String),
    /// A client address.
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since_ms: u64,
    count: u32,
}

impl Consoles {
    /// The sessions in `stored`; at most `max_checks` password checks at
    /// once, sign-ins refused after `max_failures` failures per name or
    /// address within [`FAILURE_WINDOW_MS`].
    pub(crate) fn new(stored: Vec<ConsoleSession>, max_checks: usize, max_failures: u32) -> Self {
        Self {
            sessions: RwLock::new(stored.into_iter().map(|s| (s.token_hash, s)).collect()),
            checks: Arc::new(Semaphore::new(max_checks.max(1))),
            failures: Mutex::new(HashMap::new()),
            max_failures,
        }
    }

    /// The session of `token_hash`, if signed in and not expired at
    /// `now_ms`.
    pub(crate) fn find(&self, token_hash: &[u8; 32], now_ms: u64) -> Option<ConsoleSession> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions
            .get(token_hash)
            .filter(|s| s.expires_ms > now_ms)
            .cloned()
    }

    /// Whether `credential`, from a console's `Hello` for `terminal`, is
    /// the token of a live session of that console.
    pub(crate) fn verify(&self, terminal: TerminalId, credential: &[u8], now_ms: u64) -> bool {
        self.find(&token_hash(credential), now_ms)
            .is_some_and(|s| s.terminal == terminal)
    }

    /// Adds a new session.
    pub(crate) fn insert(&self, session: ConsoleSession) {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        sessions.insert(session.token_hash, session);
    }

    /// Removes the session of `token_hash`.
    pub(crate) fn remove(&self, token_hash: &[u8; 32]) -> Option<ConsoleSession> {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        sessions.remove(token_hash)
    }

    /// Makes the sessions those of `stored` (the store's, read again:
    /// `ptt-gateway operator` may have removed an operator or changed a
    /// password, ending sessions) and returns the sessions that ended.
    pub(crate) fn sync(&self, stored: Vec<ConsoleSession>) -> Vec<ConsoleSession> {
        let stored: HashMap<[u8; 32], ConsoleSession> =
            stored.into_iter().map(|s| (s.token_hash, s)).collect();
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let ended = sessions
            .values()
            .filter(|s| !stored.contains_key(&s.token_hash))
            .cloned()
            .collect();
        *sessions = stored;
        ended
    }

    /// Removes and returns the sessions expired at `now_ms`.
    pub(crate) fn expire(&self, now_ms: u64) -> Vec<ConsoleSession> {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<_> = sessions
            .values()
            .filter(|s| s.expires_ms <= now_ms)
            .cloned()
            .collect();
        for s in &expired {
            sessions.remove(&s.token_hash);
        }
        expired
    }

    /// The password-check slots.
    pub(crate) fn checks(&self) -> &Arc<Semaphore> {
        &self.checks
    }

    /// Whether any of `who` failed `max_failures` times within the window
    /// before `now_ms`: then its sign-in is refused unchecked.
    pub(crate) fn throttled(&self, who: &[Attempter], now_ms: u64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        who.iter().any(|w| {
            failures.get(w).is_some_and(|f| {
                now_ms.saturating_sub(f.since_ms) < FAILURE_WINDOW_MS
                    && f.count >= self.max_failures
            })
        })
    }

    /// Counts a failed sign-in against each of `who`.
    pub(crate) fn failed(&self, who: &[Attempter], now_ms: u64) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| now_ms.saturating_sub(f.since_ms) < FAILURE_WINDOW_MS);
            if failures.len() >= MAX_TRACKED {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since_ms)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        for w in who {
            let f = failures.entry(w.clone()).or_insert(Failures {
                since_ms: now_ms,
                count: 0,
            });
            if now_ms.saturating_sub(f.since_ms) >= FAILURE_WINDOW_MS {
                *f = Failures {
                    since_ms: now_ms,
                    count: 0,
                };
            }
            f.count += 1;
        }
    }

    /// Forgets the failures of `who` (a successful sign-in by that name).
    pub(crate) fn succeeded(&self, who: &Attempter) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(who);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token: &[u8], terminal: u32, expires_ms: u64) -> ConsoleSession {
        ConsoleSession {
            token_hash: token_hash(token),
            operator: "wang".into(),
            terminal: TerminalId(terminal),
            created_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn a_token_signs_in_its_own_console_until_it_expires() {
        let consoles = Consoles::new(vec![session(b"secret", 300, 1_000)], 1, 5);
        assert!(consoles.verify(TerminalId(300), b"secret", 999));
        assert!(
            !consoles.verify(TerminalId(301), b"secret", 999),
            "another console"
        );
        assert!(!consoles.verify(TerminalId(300), b"other", 999));
        assert!(
            !consoles.verify(TerminalId(300), b"secret", 1_000),
            "expired"
        );
        assert_eq!(consoles.expire(1_000).len(), 1);
        assert!(consoles.expire(1_000).is_empty());
    }

    #[test]
    fn a_sync_ends_the_sessions_the_store_no_longer_has() {
        let consoles = Consoles::new(vec![session(b"a", 300, 9), session(b"b", 301, 9)], 1, 5);
        let ended = consoles.sync(vec![session(b"b", 301, 9), session(b"c", 302, 9)]);
        assert_eq!(ended, vec![session(b"a", 300, 9)]);
        assert!(consoles.verify(TerminalId(302), b"c", 0));
        assert!(!consoles.verify(TerminalId(300), b"a", 0));
    }

    #[test]
    fn failures_throttle_a_name_or_an_address_for_the_window() {
        let consoles = Consoles::new(Vec::new(), 1, 3);
        let name = Attempter::Name("wang".into());
        let addr = Attempter::Address("10.0.0.1".parse().unwrap());
        let who = [name.clone(), addr.clone()];
        for _ in 0..3 {
            assert!(!consoles.throttled(&who, 10));
            consoles.failed(&who, 10);
        }
        assert!(consoles.throttled(std::slice::from_ref(&name), 11));
        assert!(consoles.throttled(std::slice::from_ref(&addr), 11));
        assert!(!consoles.throttled(&[Attempter::Name("li".into())], 11));
        assert!(
            !consoles.throttled(&who, 10 + FAILURE_WINDOW_MS),
            "the window passed"
        );
        consoles.succeeded(&name);
        assert!(!consoles.throttled(&[name], 11));
    }

    #[test]
    fn failure_tracking_is_bounded() {
        let consoles = Consoles::new(Vec::new(), 1, 3);
        for i in 0..(MAX_TRACKED as u32 + 100) {
            consoles.failed(&[Attempter::Name(format!("n{i}"))], u64::from(i));
        }
        assert!(consoles.failures.lock().unwrap().len() <= MAX_TRACKED);
    }
}
