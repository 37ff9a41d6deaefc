//! How well each terminal hears: the last `LinkReport` of each terminal,
//! when it came, and running totals, for the command room (`GET
//! /api/v1/terminals`, `GET /api/v1/link`).
//!
//! Bounded: one entry per terminal (an authenticated terminal of the org;
//! kept across its reconnects, as the registry keeps its groups), and a
//! report less than [`MIN_INTERVAL`] after the last one kept from the same
//! terminal is dropped, so a flood costs a map lookup per frame and moves
//! nothing. Time comes in as `now`.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ptt_codec::TerminalId;

use super::warn;

/// Shortest spacing of kept reports from one terminal. Terminals report
/// every 5 s (the reference library's default); 1 s leaves room for a
/// terminal configured faster and for reports bunched by a stalled
/// control stream, while a flood keeps one report a second.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// One report's figures, as the terminal sent them (docs/PROTOCOL.md,
/// "Link quality reports").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    /// Voice frames received in the interval, late ones included.
    pub(crate) received: u32,
    /// Frames missing from sequence gaps.
    pub(crate) lost: u32,
    /// Received frames too late to play.
    pub(crate) late: u32,
    /// RFC 3550 interarrival jitter, microseconds.
    pub(crate) jitter_us: u32,
}

impl Figures {
    /// Lost over expected (received + lost); 0 when nothing was expected.
    pub(crate) fn loss_ratio(&self) -> f64 {
        ratio(
            u64::from(self.lost),
            u64::from(self.received) + u64::from(self.lost),
        )
    }

    /// Late over received; 0 when nothing was received.
    pub(crate) fn late_ratio(&self) -> f64 {
        ratio(u64::from(self.late), u64::from(self.received))
    }
}

/// Sums over every report kept from a terminal since the gateway started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Reports kept.
    pub(crate) reports: u64,
    /// Frames received.
    pub(crate) received: u64,
    /// Frames lost.
    pub(crate) lost: u64,
    /// Frames late.
    pub(crate) late: u64,
}

impl Totals {
    /// Lost over expected, over every report kept.
    pub(crate) fn loss_ratio(&self) -> f64 {
        ratio(self.lost, self.received.saturating_add(self.lost))
    }
}

/// What the gateway knows of one terminal's reception.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Entry {
    /// The last report kept.
    pub(crate) last: Figures,
    /// When it came (the gateway's monotonic clock).
    pub(crate) at: Instant,
    /// When it came, ms since the Unix epoch.
    pub(crate) at_ms: u64,
    /// Sums over every report kept.
    pub(crate) totals: Totals,
}

/// Whether a report was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Kept: it is the terminal's last report now.
    Kept,
    /// Dropped: less than [`MIN_INTERVAL`] after the last one kept.
    TooSoon,
}

/// Every terminal's reception.
#[derive(Debug, Default)]
pub(crate) struct Quality {
    entries: DashMap<TerminalId, Entry>,
    /// Dropped reports are warned about at most once per
    /// [`warn::EVERY_MS`]: a terminal flooding reports cannot flood the log.
    warned: warn::Gate,
}

impl Quality {
    /// Takes `terminal`'s report `figures`, arrived at `now` (`now_ms` on
    /// the wall clock). Call for every `LinkReport` of an authenticated
    /// session; count the verdict.
    pub(crate) fn report(
        &self,
        terminal: TerminalId,
        figures: Figures,
        now: Instant,
        now_ms: u64,
    ) -> Verdict {
        let mut entry = self.entries.entry(terminal).or_insert(Entry {
            last: Figures::default(),
            at: now,
            at_ms: now_ms,
            totals: Totals::default(),
        });
        let e = entry.value_mut();
        if e.totals.reports > 0 && now.saturating_duration_since(e.at) < MIN_INTERVAL {
            return Verdict::TooSoon;
        }
        e.last = figures;
        e.at = now;
        e.at_ms = now_ms;
        let t = &mut e.totals;
        t.reports += 1;
        t.received = t.received.saturating_add(u64::from(figures.received));
        t.lost = t.lost.saturating_add(u64::from(figures.lost));
        t.late = t.late.saturating_add(u64::from(figures.late));
        Verdict::Kept
    }

    /// Whether a dropped report may be warned about at `now_ms`.
    pub(crate) fn warn_due(&self, now_ms: u64) -> bool {
        self.warned.due(now_ms)
    }

    /// What `terminal` last reported, if it ever did.
    pub(crate) fn of(&self, terminal: TerminalId) -> Option<Entry> {
        self.entries.get(&terminal).map(|e| *e)
    }

    /// Every terminal that reported, worst first: by the last report's loss
    /// ratio, then its late ratio, then its jitter, then by id.
    pub(crate) fn worst_first(&self) -> Vec<(TerminalId, Entry)> {
        let mut all: Vec<(TerminalId, Entry)> = self
            .entries
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect();
        all.sort_by(|a, b| worse(&a.1.last, &b.1.last).then(a.0.cmp(&b.0)));
        all
    }
}

/// `Less` when `a` hears worse than `b` (it sorts first).
fn worse(a: &Figures, b: &Figures) -> Ordering {
    b.loss_ratio()
        .total_cmp(&a.loss_ratio())
        .then(b.late_ratio().total_cmp(&a.late_ratio()))
        .then(b.jitter_us.cmp(&a.jitter_us))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(received: u32, lost: u32, late: u32, jitter_us: u32) -> Figures {
        Figures {
            received,
            lost,
            late,
            jitter_us,
        }
    }

    #[test]
    fn keeps_the_last_report_and_sums_the_totals() {
        let q = Quality::default();
        let t0 = Instant::now();
        let a = TerminalId(7);
        assert_eq!(q.of(a), None);
        assert_eq!(
            q.report(a, figures(250, 0, 0, 900), t0, 1_000),
            Verdict::Kept
        );
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            q.report(a, figures(240, 10, 2, 4_000), later, 6_000),
            Verdict::Kept
        );
        let e = q.of(a).expect("reported");
        assert_eq!(e.last, figures(240, 10, 2, 4_000));
        assert_eq!((e.at, e.at_ms), (later, 6_000));
        assert_eq!(
            e.totals,
            Totals {
                reports: 2,
                received: 490,
                lost: 10,
                late: 2
            }
        );
        assert!((e.last.loss_ratio() - 0.04).abs() < 1e-9);
        assert!((e.totals.loss_ratio() - 0.02).abs() < 1e-9);
    }

    #[test]
    fn reports_closer_than_a_second_are_dropped() {
        let q = Quality::default();
        let t0 = Instant::now();
        let a = TerminalId(7);
        assert_eq!(q.report(a, figures(50, 0, 0, 0), t0, 0), Verdict::Kept);
        // A flood: 100 reports a second for 3 s keeps one a second.
        let mut kept = 0;
        for i in 1..=300u64 {
            let now = t0 + Duration::from_millis(10 * i);
            if q.report(a, figures(1, 1, 0, 0), now, 10 * i) == Verdict::Kept {
                kept += 1;
            }
        }
        assert_eq!(kept, 3, "at 1 s, 2 s and 3 s");
        let e = q.of(a).expect("reported");
        assert_eq!(e.totals.reports, 4);
        assert_eq!(e.totals.received, 53, "dropped reports add nothing");
        // Another terminal is not held back by this one.
        assert_eq!(
            q.report(
                TerminalId(8),
                figures(1, 0, 0, 0),
                t0 + Duration::from_millis(3_005),
                0
            ),
            Verdict::Kept
        );
    }

    #[test]
    fn the_worst_hearing_terminal_comes_first() {
        let q = Quality::default();
        let now = Instant::now();
        q.report(TerminalId(1), figures(250, 0, 0, 500), now, 0);
        q.report(TerminalId(2), figures(200, 50, 0, 500), now, 0); // 20 % lost
        q.report(TerminalId(3), figures(245, 5, 0, 500), now, 0); // 2 % lost
        q.report(TerminalId(4), figures(250, 0, 25, 500), now, 0); // 10 % late
        q.report(TerminalId(5), figures(250, 0, 0, 9_000), now, 0); // jittery
        q.report(TerminalId(6), figures(0, 0, 0, 0), now, 0); // heard nothing
        let order: Vec<u32> = q.worst_first().iter().map(|(t, _)| t.0).collect();
        assert_eq!(order, [2, 3, 4, 5, 1, 6]);
    }

    #[test]
    fn extreme_figures_neither_overflow_nor_panic() {
        let q = Quality::default();
        let t0 = Instant::now();
        let max = figures(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        for i in 0..3u64 {
            q.report(TerminalId(9), max, t0 + Duration::from_secs(2 * i), 0);
        }
        let e = q.of(TerminalId(9)).expect("reported");
        assert_eq!(e.totals.received, 3 * u64::from(u32::MAX));
        assert!((e.last.loss_ratio() - 0.5).abs() < 1e-9);
        assert!((e.last.late_ratio() - 1.0).abs() < 1e-9);
        assert_eq!(q.worst_first().len(), 1);
    }
}
