//! Which waiting connection attempt gets the next handshake slot.
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
//! Known gap: newest-first lets a flood of Initial packets from forged
//! addresses (about 51 per second fill 256 slots for 5 s each) push real
//! terminals down the queue; first-come first-served had the same gap.
//! Answering unproven addresses with a QUIC Retry while busy closed it, but
//! some Retried quinn clients never completed (0.4-0.6 % under a city
//! ramp, cause not found), so it is not done (BENCHMARKS.md).
//!
//! Sans-I/O: the caller passes the time and does the accepting and
//! dropping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Attempts waiting for a handshake slot, newest served first.
#[derive(Debug)]
pub struct Queue<T> {
    /// Oldest at the front, newest at the back.
    waiting: VecDeque<(Instant, T)>,
    max_wait: Duration,
}

impl<T> Queue<T> {
    /// An empty queue that drops attempts older than `max_wait`.
    pub fn new(max_wait: Duration) -> Self {
        Self {
            waiting: VecDeque::new(),
            max_wait,
        }
    }

    /// An attempt arrived at `now`.
    pub fn push(&mut self, now: Instant, attempt: T) {
        self.waiting.push_back((now, attempt));
    }

    /// The newest attempt, to start its handshake.
    pub fn pop(&mut self) -> Option<T> {
        self.waiting.pop_back().map(|(_, a)| a)
    }

    /// Takes out the attempts that have waited longer than `max_wait` by
    /// `now`, oldest first, for the caller to drop.
    pub fn expired(&mut self, now: Instant) -> impl Iterator<Item = T> + '_ {
        let max_wait = self.max_wait;
        std::iter::from_fn(move || {
            let (arrived, _) = self.waiting.front()?;
            if now.saturating_duration_since(*arrived) > max_wait {
                self.waiting.pop_front().map(|(_, a)| a)
            } else {
                None
            }
        })
    }

    /// When the oldest attempt expires, if any waits.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.waiting.front().map(|(t, _)| *t + self.max_wait)
    }

    /// Attempts waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn the_newest_attempt_goes_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(WAIT);
        q.push(t0, 'a');
        q.push(t0 + Duration::from_millis(1), 'b');
        q.push(t0 + Duration::from_millis(2), 'c');
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some('c'));
        q.push(t0 + Duration::from_millis(3), 'd');
        assert_eq!(q.pop(), Some('d'));
        assert_eq!(q.pop(), Some('b'));
        assert_eq!(q.pop(), Some('a'));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn attempts_that_waited_too_long_are_handed_back_oldest_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(WAIT);
        q.push(t0, 1);
        q.push(t0 + Duration::from_secs(1), 2);
        q.push(t0 + Duration::from_secs(4), 3);
        assert_eq!(q.next_expiry(), Some(t0 + WAIT));
        // Exactly max_wait is still in time.
        assert_eq!(q.expired(t0 + WAIT).count(), 0);
        let gone: Vec<_> = q.expired(t0 + Duration::from_secs(7)).collect();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(q.next_expiry(), Some(t0 + Duration::from_secs(4) + WAIT));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.next_expiry(), None);
    }
}
