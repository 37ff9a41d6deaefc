//! Per-terminal rate limits on control frames, by frame kind: a token
//! bucket each, and a strike count that says when a terminal that keeps
//! sending over its limits is closed.
//!
//! The driver keeps one [`Limiter`] per terminal (across its reconnects,
//! so that reconnecting refills nothing) and calls [`Limiter::check`] with
//! the frame's [`Kind`] (from [`Kind::of`]) before it does any work for the
//! frame, and [`Limiter::join`] for each `Join` and `Leave` (the join
//! bucket of [`crate::group::churn`], held here with the others).

use std::time::{Duration, Instant};

use ptt_codec::ClientMsg;
use serde::Deserialize;

use crate::fanout::RateLimit;
use crate::group::churn::{self, Churn};

/// The frame kinds with a rate of their own. Frames not listed (`Ping`,
/// floor requests, `Leave`, ...) are answered at once without a task or a
/// database read, or are bounded elsewhere (joins, fetches, SOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Position`.
    Position,
    /// `AlertSend`: dispatches, alerts and work reports.
    Alert,
    /// `AlertReceipt`.
    Receipt,
    /// `AlertQuery`.
    AlertQuery,
    /// `DrillReportQuery`.
    DrillQuery,
    /// `SosCancel`.
    SosCancel,
    /// `WatchPositions`.
    Watch,
}

impl Kind {
    const COUNT: usize = 7;

    /// The rate-limited kind of `msg`, `None` for a frame without a rate of
    /// its own.
    pub fn of(msg: &ClientMsg) -> Option<Self> {
        Some(match msg {
            ClientMsg::Position { .. } => Kind::Position,
            ClientMsg::AlertSend { .. } => Kind::Alert,
            ClientMsg::AlertReceipt { .. } => Kind::Receipt,
            ClientMsg::AlertQuery { .. } => Kind::AlertQuery,
            ClientMsg::DrillReportQuery { .. } => Kind::DrillQuery,
            ClientMsg::SosCancel { .. } => Kind::SosCancel,
            ClientMsg::WatchPositions { .. } => Kind::Watch,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind's name, for logs and the documentation.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Position => "position",
            Kind::Alert => "alert",
            Kind::Receipt => "receipt",
            Kind::AlertQuery => "alert query",
            Kind::DrillQuery => "drill report query",
            Kind::SosCancel => "SOS cancel",
            Kind::Watch => "watch positions",
        }
    }
}

/// A sustained rate and a burst, in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Frames per second sustained, at least 1.
    pub per_second: u32,
    /// Frames at once after a pause, at least 1.
    pub burst: u32,
}

impl Rate {
    const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The rate of each frame kind, per terminal (`[limits.rates]`). Each
/// default is a real terminal's worst legitimate rate times a margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rates {
    /// `Position`. Default 5/s, bursts of 50: a terminal in a vehicle
    /// reports at most once a second; a terminal back in coverage may send
    /// the few dozen fixes it kept while away at once.
    pub position: Rate,
    /// `AlertSend`. Default 10/s, bursts of 50: a console operator sends a
    /// dispatch every few seconds at most, a console script dispatching to
    /// every unit of a station a few dozen at once (the alert tests send 20
    /// back to back), and the hostile suite's dispatch probe 4 a second
    /// for the whole attack. An alert must never be lost, so like a
    /// receipt one over the rate is waited for, not refused.
    pub alert: Rate,
    /// `AlertReceipt`. Default 50/s, bursts of 500: two receipts
    /// (delivered, then accepted or rejected) per alert received, and a
    /// console back online acknowledges its whole store-and-forward backlog
    /// at once. A receipt must never be lost, so one over the rate is not
    /// refused: the driver stops reading the terminal's control stream
    /// until the bucket has a token ([`Limiter::try_take`]).
    pub receipt: Rate,
    /// `AlertQuery`. Default 5/s, bursts of 50: a console polls the status
    /// of the alerts on its screen, a few dozen at most.
    pub alert_query: Rate,
    /// `DrillReportQuery`. Default 1/s, bursts of 10: each query computes
    /// and stores a whole report, and a supervisor asks for one drill at a
    /// time.
    pub drill_query: Rate,
    /// `SosCancel`. Default 10/s, bursts of 20: a supervisor cancels the
    /// SOS of a few guards of a unit at once, and a guard cancels each SOS
    /// he raised, a press each (the hostile suite's SOS probe raises and
    /// cancels 4 a second for the whole attack).
    pub sos_cancel: Rate,
    /// `WatchPositions`. Default 2/s, bursts of 20: a console switching
    /// between the nodes on its map.
    pub watch: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            position: Rate::new(5, 50),
            alert: Rate::new(10, 50),
            receipt: Rate::new(50, 500),
            alert_query: Rate::new(5, 50),
            drill_query: Rate::new(1, 10),
            sos_cancel: Rate::new(10, 20),
            watch: Rate::new(2, 20),
        }
    }
}

impl Rates {
    /// The rate of `kind`.
    pub fn of(&self, kind: Kind) -> Rate {
        self.all()[kind.index()].1
    }

    /// Every rate with its field name, for validation.
    pub fn all(&self) -> [(&'static str, Rate); Kind::COUNT] {
        [
            ("position", self.position),
            ("alert", self.alert),
            ("receipt", self.receipt),
            ("alert_query", self.alert_query),
            ("drill_query", self.drill_query),
            ("sos_cancel", self.sos_cancel),
            ("watch", self.watch),
        ]
    }
}

/// When a terminal over its limits is closed: after `strikes` refusals
/// (rate or busy) within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abuse {
    /// Refusals tolerated within `window`; the next closes the connection.
    pub strikes: u32,
    /// The window refusals are counted in.
    pub window: Duration,
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within its rate: handle it.
    Allow,
    /// Over its rate: refuse it with an error and count it.
    Refuse,
    /// Over its rate, and the terminal has been refused too often: close
    /// the connection.
    Close,
}

/// One terminal's buckets and strikes, and its joins and leaves.
#[derive(Debug)]
pub struct Limiter {
    /// The buckets of the kinds this terminal has sent, each created full
    /// at its first frame (the same state as a bucket full since the start
    /// and never used): a terminal that only talks carries none. At most
    /// [`Kind::COUNT`], grown one at a time.
    buckets: Vec<(Kind, RateLimit)>,
    rates: Rates,
    abuse: Abuse,
    strikes: u32,
    window_start: Option<Instant>,
    /// Joins and leaves: a bucket of their own with its own closing rule
    /// (refusals in a row, [`churn::Limits::max_refused`]).
    joins: Churn,
}

impl Limiter {
    /// Full buckets for a terminal first seen now; `joins` bounds its
    /// joins and leaves.
    pub fn new(rates: &Rates, abuse: Abuse, joins: churn::Limits) -> Self {
        Self {
            buckets: Vec::new(),
            rates: *rates,
            abuse,
            strikes: 0,
            window_start: None,
            joins: Churn::new(joins),
        }
    }

    /// Takes one `Join` or `Leave` at `now`. Call for each before carrying
    /// it out, except the join an SOS makes to its unit's group (never
    /// limited). Kept across the terminal's reconnects: a new session does
    /// not start with a full bucket, and a terminal closed for refused
    /// joins is closed again at its next refused join.
    pub fn join(&mut self, now: Instant) -> churn::Verdict {
        self.joins.check(now)
    }

    /// Joins and leaves refused since the last allowed one (1 on the first
    /// of a run: log then).
    pub fn joins_refused(&self) -> u32 {
        self.joins.refused()
    }

    /// The bucket of `kind`, created full at its first use.
    fn bucket(&mut self, kind: Kind) -> &mut RateLimit {
        let at = match self.buckets.iter().position(|(k, _)| *k == kind) {
            Some(at) => at,
            None => {
                let rate = self.rates.of(kind);
                self.buckets.reserve_exact(1);
                self.buckets
                    .push((kind, RateLimit::new(rate.per_second, rate.burst)));
                self.buckets.len() - 1
            }
        };
        &mut self.buckets[at].1
    }

    /// Takes a token of `kind` at `now`. Call for every frame with a
    /// [`Kind`] before doing any work for it.
    pub fn check(&mut self, kind: Kind, now: Instant) -> Verdict {
        if self.bucket(kind).allow(now) {
            Verdict::Allow
        } else {
            self.strike(now)
        }
    }

    /// Takes a token of `kind` at `now` if there is one, without counting
    /// a refusal when there is none. Call for a frame that waits for its
    /// token rather than being refused.
    pub fn try_take(&mut self, kind: Kind, now: Instant) -> bool {
        self.bucket(kind).allow(now)
    }

    /// The sustained rate of `kind`, frames per second.
    pub fn per_second(&self, kind: Kind) -> u32 {
        self.rates.of(kind).per_second
    }

    /// Counts a refusal made elsewhere (e.g. too much work in flight) at
    /// `now`; says whether the terminal is now to be closed.
    pub fn strike(&mut self, now: Instant) -> Verdict {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < self.abuse.window => {}
            _ => {
                self.window_start = Some(now);
                self.strikes = 0;
            }
        }
        self.strikes += 1;
        if self.strikes > self.abuse.strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOINS: churn::Limits = churn::Limits {
        per_second: 2,
        burst: 4,
        max_refused: 3,
    };

    fn limiter(strikes: u32) -> Limiter {
        let rates = Rates {
            alert_query: Rate::new(10, 5),
            ..Rates::default()
        };
        Limiter::new(
            &rates,
            Abuse {
                strikes,
                window: Duration::from_secs(10),
            },
            JOINS,
        )
    }

    #[test]
    fn joins_have_their_own_bucket_and_rule() {
        let t0 = Instant::now();
        let mut l = limiter(0);
        let verdicts: Vec<_> = (0..8).map(|_| l.join(t0)).collect();
        assert_eq!(verdicts[..4], [churn::Verdict::Allow; 4]);
        assert_eq!(
            verdicts[4..],
            [
                churn::Verdict::Refuse,
                churn::Verdict::Refuse,
                churn::Verdict::Refuse,
                churn::Verdict::Close
            ]
        );
        assert_eq!(l.joins_refused(), 4);
        // Refused joins are no strikes of the other kinds (strikes = 0
        // would close at the first), and the other kinds' buckets are full.
        assert_eq!(l.check(Kind::AlertQuery, t0), Verdict::Allow);
        // The same limiter (the terminal reconnected): no full bucket, the
        // next refusal closes again; a token later, it is forgiven.
        assert_eq!(l.join(t0), churn::Verdict::Close);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.join(t1), churn::Verdict::Allow);
        assert_eq!(l.joins_refused(), 0);
    }

    #[test]
    fn a_limiter_is_small_and_grows_by_the_kinds_used() {
        // Kept per terminal for the gateway's life: one per terminal of
        // the org that ever connected (issue 11, memory per connection).
        let size = std::mem::size_of::<Limiter>();
        let bucket = std::mem::size_of::<(Kind, RateLimit)>();
        // Before, every terminal carried every kind's bucket and rate.
        let eager = std::mem::size_of::<[RateLimit; Kind::COUNT]>()
            + std::mem::size_of::<[u32; Kind::COUNT]>();
        eprintln!(
            "Limiter: {size} bytes, and {bucket} per kind used (eager buckets and rates were {eager})"
        );
        assert!(size <= 256, "{size}");
        let t0 = Instant::now();
        let mut l = limiter(1000);
        assert_eq!(l.buckets.len(), 0, "a terminal that only talks has none");
        l.join(t0);
        assert_eq!(l.buckets.len(), 0, "joins have their own bucket");
        l.check(Kind::Position, t0);
        l.check(Kind::Position, t0);
        assert!(l.try_take(Kind::Receipt, t0));
        assert_eq!(l.buckets.len(), 2);
        assert_eq!(l.buckets.capacity(), 2, "grown one at a time");
        assert_eq!(l.per_second(Kind::Watch), Rates::default().watch.per_second);
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills_it() {
        let t0 = Instant::now();
        let mut l = limiter(1000);
        let allowed = (0..20)
            .filter(|_| l.check(Kind::AlertQuery, t0) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 5);
        // Other kinds have buckets of their own.
        assert_eq!(l.check(Kind::Position, t0), Verdict::Allow);
        // 10/s: one more every 100 ms.
        let t1 = t0 + Duration::from_millis(300);
        let allowed = (0..20)
            .filter(|_| l.check(Kind::AlertQuery, t1) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn too_many_refusals_within_the_window_close() {
        let t0 = Instant::now();
        let mut l = limiter(3);
        for _ in 0..5 {
            assert_eq!(l.check(Kind::AlertQuery, t0), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(l.check(Kind::AlertQuery, t0), Verdict::Refuse);
        }
        assert_eq!(l.check(Kind::AlertQuery, t0), Verdict::Close);
    }

    #[test]
    fn taking_without_a_token_is_no_strike() {
        let t0 = Instant::now();
        let mut l = limiter(0);
        let taken = (0..1000).filter(|_| l.try_take(Kind::Receipt, t0)).count();
        assert_eq!(taken, 500);
        assert_eq!(l.per_second(Kind::Receipt), 50);
        // No refusal was counted: the first one closes (strikes = 0).
        assert_eq!(l.strike(t0), Verdict::Close);
    }

    #[test]
    fn refusals_spread_over_windows_never_close() {
        let t0 = Instant::now();
        let mut l = limiter(3);
        for w in 0..10u32 {
            let t = t0 + Duration::from_secs(11) * w;
            // Each window: a full burst (refilled), then three refusals.
            for _ in 0..5 {
                assert_eq!(l.check(Kind::AlertQuery, t), Verdict::Allow);
            }
            for _ in 0..3 {
                assert_eq!(l.check(Kind::AlertQuery, t), Verdict::Refuse);
            }
        }
        assert_eq!(l.strike(t0 + Duration::from_secs(110)), Verdict::Refuse);
    }

    #[test]
    fn kinds_map_from_frames() {
        assert_eq!(
            Kind::of(&ClientMsg::AlertQuery { alert: 1 }),
            Some(Kind::AlertQuery)
        );
        assert_eq!(Kind::of(&ClientMsg::Ping { nonce: 1 }), None);
        assert_eq!(Kind::of(&ClientMsg::Sos), None);
    }
}
