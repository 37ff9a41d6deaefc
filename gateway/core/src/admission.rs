//! Which connection attempt gets a handshake slot, which is answered with
//! a QUIC Retry, and which is dropped.
//!
//! The gateway runs at most `transport.max_handshakes` QUIC handshakes at
//! once; attempts beyond that wait. In a reconnect storm (a gateway
//! restart, a cell outage) the whole city arrives within a second or two
//! and most attempts wait. Served first-come first-served, the queue ages
//! past the terminals' patience (our terminal library gives up after 10 s
//! and tries again with a new attempt): every slot then goes to an attempt
//! whose terminal has already left, and the handshake sits in its slot
//! until it times out. Measured: with the whole city (30,865 terminals) the
//! gateway completed no session at all for over three minutes, its
//! handshake slots held by attempts whose terminals had given up.
//!
//! So the newest attempt goes first (its terminal is surely still
//! waiting), and an attempt that waited longer than `max_wait` is dropped
//! without an answer: its terminal has given up or soon will, and will come
//! back as a new attempt. Under light load the queue is empty and the order
//! does not matter. Together with a deadline on each handshake
//! (`transport.handshake_timeout_ms`), a slot is never held long by a
//! terminal that is gone.
//!
//! Newest-first alone lets a flood of Initial packets push real terminals
//! down the queue (about 51 a second keep 256 slots busy for 5 s each).
//! Two rules close that:
//! - **Address validation under pressure.** Once `retry_from` attempts are
//!   in handshake or waiting, an attempt from an address that has not
//!   proven it receives what is sent to it gets a QUIC Retry (a token, no
//!   state kept) instead of a place. A real terminal comes back with the
//!   token one round trip later, as a proven attempt; a forged address
//!   never does.
//! - **A bound per source address** (IP and port): at most `per_address`
//!   unproven attempts in handshake or waiting, and `per_proven_address`
//!   proven ones, counted apart. An unproven attempt over its bound gets a
//!   Retry; a proven one is dropped unanswered. Counted apart, so that
//!   Initials forged with a terminal's address cannot use up that
//!   terminal's allowance; proven attempts may have more, since they cost
//!   a round trip and come from an address that answers. Per IP
//!   and port, not per IP: the handsets of a station behind one carrier-
//!   grade NAT address each have a port of their own, and a per-IP bound
//!   would let one of them (or anyone sharing the NAT) lock out the rest.
//!
//! Sans-I/O: the caller passes the time and each attempt's address and
//! validation, does the accepting, retrying and dropping, and says when a
//! started handshake is over ([`Admission::finished`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The bounds admission applies (from `transport.*` in the gateway's
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest an attempt waits for a slot before it is dropped
    /// (`transport.handshake_queue_ms`).
    pub max_wait: Duration,
    /// Attempts in handshake or waiting from which unproven addresses get a
    /// Retry (`transport.retry_from`); 0 retries every unproven attempt.
    pub retry_from: usize,
    /// Unproven attempts in handshake or waiting per source address
    /// (`transport.handshakes_per_address`).
    pub per_address: usize,
    /// Proven attempts in handshake or waiting per source address
    /// (`transport.handshakes_per_proven_address`).
    pub per_proven_address: usize,
}

/// What to do with an attempt that just arrived ([`Admission::arrive`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// It waits for a slot; take it with [`Admission::start`].
    Queued,
    /// Answer it with a QUIC Retry.
    Retry(T, RetryCause),
    /// Drop it unanswered: its proven address has `per_proven_address`
    /// attempts in handshake or waiting already.
    AddressFull(T),
}

/// Why an attempt gets a Retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// `retry_from` attempts are in handshake or waiting.
    Busy,
    /// Its address has `per_address` unproven attempts in handshake or
    /// waiting already.
    Address,
}

/// A started handshake, to hand back to [`Admission::finished`] once it is
/// over (done, failed or abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    from: SocketAddr,
    proven: bool,
}

impl Ticket {
    /// Where the attempt came from.
    pub fn from(&self) -> SocketAddr {
        self.from
    }
}

/// Attempts of one source address in handshake or waiting.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    proven: usize,
    unproven: usize,
}

impl Count {
    fn of(&mut self, proven: bool) -> &mut usize {
        if proven {
            &mut self.proven
        } else {
            &mut self.unproven
        }
    }
}

/// Connection attempts waiting for a handshake slot or in handshake.
#[derive(Debug)]
pub struct Admission<T> {
    /// Oldest at the front, newest at the back.
    waiting: VecDeque<(Instant, Ticket, T)>,
    /// Attempts started and not yet [`Admission::finished`].
    in_progress: usize,
    /// Attempts waiting or in handshake, per source address; no entry for
    /// an address with none.
    per_address: HashMap<SocketAddr, Count>,
    limits: Limits,
}

impl<T> Admission<T> {
    /// Nobody waiting, nothing in handshake.
    pub fn new(limits: Limits) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_progress: 0,
            per_address: HashMap::new(),
            limits,
        }
    }

    /// An attempt from `from` arrived at `now`; `proven` when it carries a
    /// valid Retry or address-validation token. Returns what to do with it;
    /// a [`Verdict::Queued`] attempt is kept here until started or expired.
    pub fn arrive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        proven: bool,
        attempt: T,
    ) -> Verdict<T> {
        let count = self.per_address.get(&from).copied().unwrap_or_default();
        if !proven {
            if self.in_progress + self.waiting.len() >= self.limits.retry_from {
                return Verdict::Retry(attempt, RetryCause::Busy);
            }
            if count.unproven >= self.limits.per_address {
                return Verdict::Retry(attempt, RetryCause::Address);
            }
        } else if count.proven >= self.limits.per_proven_address {
            return Verdict::AddressFull(attempt);
        }
        *self.per_address.entry(from).or_default().of(proven) += 1;
        self.waiting
            .push_back((now, Ticket { from, proven }, attempt));
        Verdict::Queued
    }

    /// The newest waiting attempt, to start its handshake now that a slot
    /// is free. Hand its ticket to [`Admission::finished`] when the
    /// handshake is over.
    pub fn start(&mut self) -> Option<(Ticket, T)> {
        let (_, ticket, attempt) = self.waiting.pop_back()?;
        self.in_progress += 1;
        Some((ticket, attempt))
    }

    /// The handshake started with `ticket` is over: done, failed or
    /// abandoned.
    pub fn finished(&mut self, ticket: Ticket) {
        self.in_progress = self.in_progress.saturating_sub(1);
        self.forget(ticket);
    }

    fn forget(&mut self, ticket: Ticket) {
        if let Some(count) = self.per_address.get_mut(&ticket.from) {
            let n = count.of(ticket.proven);
            *n = n.saturating_sub(1);
            if count.proven == 0 && count.unproven == 0 {
                self.per_address.remove(&ticket.from);
            }
        }
    }

    /// Takes out the attempts that have waited longer than `max_wait` by
    /// `now`, oldest first, for the caller to drop.
    pub fn expired(&mut self, now: Instant) -> impl Iterator<Item = T> + '_ {
        let max_wait = self.limits.max_wait;
        std::iter::from_fn(move || {
            let (arrived, _, _) = self.waiting.front()?;
            if now.saturating_duration_since(*arrived) > max_wait {
                let (_, ticket, attempt) = self.waiting.pop_front()?;
                self.forget(ticket);
                Some(attempt)
            } else {
                None
            }
        })
    }

    /// When the oldest waiting attempt expires, if any waits.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.waiting
            .front()
            .map(|(t, _, _)| *t + self.limits.max_wait)
    }

    /// Attempts waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Handshakes started and not yet finished.
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Source addresses with attempts in handshake or waiting.
    pub fn addresses(&self) -> usize {
        self.per_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn limits(retry_from: usize, per_address: usize) -> Limits {
        Limits {
            max_wait: WAIT,
            retry_from,
            per_address,
            per_proven_address: per_address,
        }
    }

    /// Address `n` on loopback, port 1000 + `n`: one handset each.
    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + n))
    }

    fn queued<T: std::fmt::Debug>(v: Verdict<T>) {
        assert!(matches!(v, Verdict::Queued), "{v:?}");
    }

    #[test]
    fn the_newest_attempt_goes_first() {
        let t0 = Instant::now();
        let mut q = Admission::new(limits(usize::MAX, usize::MAX));
        queued(q.arrive(t0, addr(1), false, 'a'));
        queued(q.arrive(t0 + Duration::from_millis(1), addr(2), false, 'b'));
        queued(q.arrive(t0 + Duration::from_millis(2), addr(3), false, 'c'));
        assert_eq!(q.waiting(), 3);
        assert_eq!(q.start().map(|(_, a)| a), Some('c'));
        queued(q.arrive(t0 + Duration::from_millis(3), addr(4), false, 'd'));
        assert_eq!(q.start().map(|(_, a)| a), Some('d'));
        assert_eq!(q.start().map(|(_, a)| a), Some('b'));
        assert_eq!(q.start().map(|(_, a)| a), Some('a'));
        assert_eq!(q.start(), None);
        assert!(q.is_empty());
        assert_eq!(q.in_progress(), 4);
    }

    #[test]
    fn attempts_that_waited_too_long_are_handed_back_oldest_first() {
        let t0 = Instant::now();
        let mut q = Admission::new(limits(usize::MAX, 1));
        queued(q.arrive(t0, addr(1), false, 1));
        queued(q.arrive(t0 + Duration::from_secs(1), addr(2), false, 2));
        queued(q.arrive(t0 + Duration::from_secs(4), addr(3), false, 3));
        assert_eq!(q.next_expiry(), Some(t0 + WAIT));
        // Exactly max_wait is still in time.
        assert_eq!(q.expired(t0 + WAIT).count(), 0);
        let gone: Vec<_> = q.expired(t0 + Duration::from_secs(7)).collect();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(q.next_expiry(), Some(t0 + Duration::from_secs(4) + WAIT));
        // An expired attempt no longer counts against its address.
        queued(q.arrive(t0 + Duration::from_secs(7), addr(1), false, 4));
        assert_eq!(q.start().map(|(_, a)| a), Some(4));
        assert_eq!(q.start().map(|(_, a)| a), Some(3));
        assert_eq!(q.next_expiry(), None);
        assert_eq!(q.addresses(), 2, "started attempts still count");
    }

    #[test]
    fn unproven_addresses_get_a_retry_once_retry_from_attempts_are_in() {
        let t0 = Instant::now();
        let mut q = Admission::new(limits(2, 8));
        queued(q.arrive(t0, addr(1), false, 1));
        let (first, _) = q.start().unwrap();
        queued(q.arrive(t0, addr(2), false, 2));
        // One in handshake, one waiting: the third unproven gets a Retry.
        assert_eq!(
            q.arrive(t0, addr(3), false, 3),
            Verdict::Retry(3, RetryCause::Busy)
        );
        // The same terminal back with the token is queued.
        queued(q.arrive(t0, addr(3), true, 3));
        // Once the pressure is off, unproven attempts are queued again.
        q.finished(first);
        let (second, _) = q.start().unwrap();
        let (third, _) = q.start().unwrap();
        assert_eq!(third.from(), addr(2));
        assert_eq!(second.from(), addr(3), "newest first");
        q.finished(second);
        q.finished(third);
        assert_eq!(q.in_progress(), 0);
        assert_eq!(q.addresses(), 0);
        queued(q.arrive(t0, addr(4), false, 4));
    }

    #[test]
    fn retry_from_zero_retries_every_unproven_attempt() {
        let t0 = Instant::now();
        let mut q = Admission::new(limits(0, 8));
        assert_eq!(
            q.arrive(t0, addr(1), false, 1),
            Verdict::Retry(1, RetryCause::Busy)
        );
        queued(q.arrive(t0, addr(1), true, 1));
    }

    #[test]
    fn one_address_holds_at_most_per_address_attempts_of_each_kind() {
        let t0 = Instant::now();
        let mut q = Admission::new(limits(usize::MAX, 2));
        queued(q.arrive(t0, addr(1), false, 1));
        queued(q.arrive(t0, addr(1), false, 2));
        // A third unproven from the same address: prove it first.
        assert_eq!(
            q.arrive(t0, addr(1), false, 3),
            Verdict::Retry(3, RetryCause::Address)
        );
        // Proven attempts have an allowance of their own, which Initials
        // forged with this address cannot use up.
        queued(q.arrive(t0, addr(1), true, 3));
        queued(q.arrive(t0, addr(1), true, 4));
        assert_eq!(q.arrive(t0, addr(1), true, 5), Verdict::AddressFull(5));
        // Other addresses are not affected.
        queued(q.arrive(t0, addr(2), true, 6));
        // A finished handshake gives its address's place back.
        let (ticket, _) = q.start().unwrap();
        assert_eq!(q.arrive(t0, addr(1), true, 7), Verdict::AddressFull(7));
        q.finished(ticket);
        let (ticket, n) = q.start().unwrap();
        assert_eq!((ticket.from(), n), (addr(1), 4));
        q.finished(ticket);
        queued(q.arrive(t0, addr(1), true, 8));
    }

    #[test]
    fn proven_attempts_have_a_bound_of_their_own() {
        let t0 = Instant::now();
        let mut q = Admission::new(Limits {
            per_proven_address: 3,
            ..limits(usize::MAX, 1)
        });
        queued(q.arrive(t0, addr(1), false, 0));
        assert_eq!(
            q.arrive(t0, addr(1), false, 1),
            Verdict::Retry(1, RetryCause::Address)
        );
        for n in 1..=3 {
            queued(q.arrive(t0, addr(1), true, n));
        }
        assert_eq!(q.arrive(t0, addr(1), true, 4), Verdict::AddressFull(4));
    }

    /// A forged flood in virtual time: 500 Initials a second from a new
    /// address each, handshakes that never finish (abandoned after 5 s),
    /// 256 slots. Real terminals arriving during it still get a slot
    /// within one Retry round trip.
    #[test]
    fn a_forged_flood_does_not_keep_real_terminals_out() {
        const SLOTS: usize = 256;
        let t0 = Instant::now();
        let mut q = Admission::new(limits(SLOTS / 2, 8));
        // Handshakes in progress: (abandoned at, ticket, real?).
        let mut running: Vec<(Instant, Ticket, bool)> = Vec::new();
        let (mut retries, mut real_started, mut forged_started) = (0, 0, 0);
        for ms in 0..20_000u64 {
            let now = t0 + Duration::from_millis(ms);
            running.retain(|(until, ticket, _)| {
                let over = *until <= now;
                if over {
                    q.finished(*ticket);
                }
                !over
            });
            // Two forged Initials every millisecond... (500/s = one per 2 ms).
            if ms % 2 == 0 {
                let forged = SocketAddr::from(([10, 0, (ms >> 8) as u8, ms as u8], 4433));
                match q.arrive(now, forged, false, false) {
                    Verdict::Queued => {}
                    Verdict::Retry(_, _) => retries += 1,
                    Verdict::AddressFull(_) => unreachable!("forged addresses differ"),
                }
            }
            // A real terminal every 100 ms: Retry or not, it gets in.
            if ms % 100 == 50 {
                let me = addr((ms / 100) as u16);
                if let Verdict::Retry(_, _) = q.arrive(now, me, false, true) {
                    // Back one round trip later, with the token.
                    queued(q.arrive(now, me, true, true));
                }
            }
            while running.len() < SLOTS {
                let Some((ticket, real)) = q.start() else {
                    break;
                };
                if real {
                    real_started += 1;
                    // A real handshake is done within a round trip.
                    running.push((now + Duration::from_millis(1), ticket, true));
                } else {
                    forged_started += 1;
                    running.push((now + Duration::from_secs(5), ticket, false));
                }
            }
            q.expired(now).for_each(drop);
        }
        assert_eq!(
            real_started, 200,
            "every real terminal started its handshake"
        );
        assert!(retries > 9_000, "forged Initials were retried: {retries}");
        assert!(
            forged_started <= SLOTS / 2 * 5,
            "forged handshakes started: {forged_started}"
        );
    }
}
