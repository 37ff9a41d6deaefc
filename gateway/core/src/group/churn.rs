//! The per-terminal limit on joins and leaves.
//!
//! A join or a leave is cheap for the terminal that sends it and costs the
//! gateway a membership change, a fan-out republish and (coalesced, see the
//! module docs of [`super`]) presence for the other members. [`Churn`]
//! bounds them with a token bucket and tells the caller when a terminal
//! keeps going over it, so that it can be closed. The driver keeps one per
//! terminal, across its reconnects, inside the terminal's
//! [`crate::limits::Limiter`].

use std::time::Instant;

use crate::fanout::RateLimit;

/// Bounds of [`Churn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Joins and leaves per second, sustained.
    pub per_second: u32,
    /// Joins and leaves in a burst (a console joining its groups at once).
    pub burst: u32,
    /// Refusals in a row (none allowed in between) after which the
    /// connection is closed.
    pub max_refused: u32,
}

/// What to do with one join or leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: carry it out.
    Allow,
    /// Over the limit: refuse it (the terminal may retry later).
    Refuse,
    /// Over the limit `max_refused` times in a row: refuse it and close
    /// the connection.
    Close,
}

/// Joins and leaves of one terminal. Call [`Churn::check`] with the time of
/// each `Join` and `Leave` before carrying it out.
#[derive(Debug, Clone)]
pub struct Churn {
    bucket: RateLimit,
    max_refused: u32,
    /// Refusals since the last allowed one.
    refused: u32,
}

impl Churn {
    /// A terminal that has joined and left nothing yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            bucket: RateLimit::new(limits.per_second, limits.burst),
            max_refused: limits.max_refused,
            refused: 0,
        }
    }

    /// Refusals since the last allowed join or leave (1 on the first of a
    /// run: log then).
    pub fn refused(&self) -> u32 {
        self.refused
    }

    /// Takes one join or leave at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.allow(now) {
            self.refused = 0;
            return Verdict::Allow;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > self.max_refused {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: Limits = Limits {
        per_second: 2,
        burst: 4,
        max_refused: 3,
    };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut c = Churn::new(LIMITS);
        let first: Vec<_> = (0..5).map(|_| c.check(t0)).collect();
        assert_eq!(first[..4], [Verdict::Allow; 4]);
        assert_eq!(first[4], Verdict::Refuse);
        // Half a second later: one more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(c.check(t1), Verdict::Allow);
        assert_eq!(c.check(t1), Verdict::Refuse);
    }

    #[test]
    fn refusals_in_a_row_close_and_an_allowed_one_forgives() {
        let t0 = Instant::now();
        let mut c = Churn::new(LIMITS);
        for _ in 0..4 {
            c.check(t0);
        }
        assert_eq!(c.check(t0), Verdict::Refuse);
        assert_eq!(c.check(t0), Verdict::Refuse);
        // Refilled: allowed, so the count of refusals starts again.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(c.check(t1), Verdict::Allow);
        let next: Vec<_> = (0..4).map(|_| c.check(t1)).collect();
        assert_eq!(
            next,
            [
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Close
            ]
        );
    }
}
