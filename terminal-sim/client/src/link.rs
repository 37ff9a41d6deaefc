//! Link quality: how well this terminal hears, reported to the gateway in
//! a `LinkReport` (docs/PROTOCOL.md, "Link quality reports") so that a
//! command room sees who hears badly.
//!
//! A [`Tracker`] is fed every voice frame the terminal receives, whatever
//! carried it (a QUIC DATAGRAM, an SRTP packet): [`Tracker::on_frame`] with
//! its header and arrival time. It counts frames received, lost (gaps in a
//! burst's frame numbers), late (out of order, or more than the reorder
//! window behind their time) and the RFC 3550 interarrival jitter, with
//! 20 ms per frame number as the media clock. [`Tracker::take_report`]
//! returns the figures since the last call, or nothing when nothing was
//! heard. Sans-I/O: time comes in as `now`.
//!
//! A [`Terminal`](crate::Terminal) keeps one ([`Terminal::link`](crate::Terminal::link))
//! fed by [`Terminal::recv_voice`](crate::Terminal::recv_voice), and sends
//! its report every [`REPORT_EVERY`] while it hears voice
//! ([`Shared::set_report_every`] changes or stops that).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ptt_codec::{ClientMsg, GroupId, VoiceHeader};
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

/// How often a terminal reports, while it hears voice: RTCP's usual
/// spacing for a handful of participants (RFC 3550 §6.2 minimum 5 s).
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How far behind its time a frame may arrive before it counts as late:
/// 60 ms, the delay of the reference jitter buffer (three frames of
/// cellular jitter; terminal-sim's `jitter::Config::target_delay`).
pub const REORDER_WINDOW: Duration = Duration::from_millis(60);

/// Time one voice frame carries: the media clock of the jitter estimate.
pub const FRAME: Duration = Duration::from_millis(20);

/// Groups followed at once: the gateway's default `session.max_groups`.
/// Past it, the group heard longest ago is forgotten.
pub const MAX_STREAMS: usize = 64;

/// Frames behind the newest of a burst whose arrival is remembered, to
/// tell a late frame from a duplicate (1.28 s of voice).
const HISTORY: u16 = 64;

/// One interval's figures, as a `LinkReport` carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Frames received, late ones included, duplicates not.
    pub received: u32,
    /// Frames missing from gaps in a burst's frame numbers, minus those
    /// that arrived late within the interval.
    pub lost: u32,
    /// Frames received out of order or more than the reorder window behind
    /// their time. At most `received`.
    pub late: u32,
    /// RFC 3550 interarrival jitter at the time of the report, µs.
    pub jitter_us: u32,
}

impl Report {
    /// The control message that carries it.
    pub fn to_msg(self) -> ClientMsg {
        ClientMsg::LinkReport {
            received: self.received,
            lost: self.lost,
            late: self.late,
            jitter_us: self.jitter_us,
        }
    }
}

/// The burst a group is playing, as far as heard.
#[derive(Debug, Clone)]
struct Stream {
    group: GroupId,
    burst: u16,
    /// The burst before, whose stragglers are late, not a new burst.
    previous: Option<u16>,
    /// Highest frame number heard of the burst.
    highest: u16,
    /// Bit `i` set: frame `highest - i` was heard.
    heard: u64,
    /// The burst's first heard frame and its arrival: the time every
    /// later frame is due by (plus 20 ms a frame).
    first: (u16, Instant),
    /// The frame heard last and its arrival, for the jitter estimate.
    last: (u16, Instant),
    /// When this group was last heard, to pick one to forget.
    heard_at: Instant,
}

/// Counts one terminal's reception (module documentation).
#[derive(Debug, Clone)]
pub struct Tracker {
    reorder_window: Duration,
    streams: Vec<Stream>,
    /// This interval's counts.
    interval: Report,
    /// The RFC 3550 estimate in µs, times 16 (its integer form, §A.8).
    jitter_x16: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(REORDER_WINDOW)
    }
}

impl Tracker {
    /// A tracker counting frames more than `reorder_window` behind their
    /// time as late.
    pub fn new(reorder_window: Duration) -> Self {
        Self {
            reorder_window,
            streams: Vec::new(),
            interval: Report::default(),
            jitter_x16: 0,
        }
    }

    /// Counts one received voice frame, arrived at `now`. Call for every
    /// frame the terminal receives, in arrival order, before any jitter
    /// buffer.
    pub fn on_frame(&mut self, header: &VoiceHeader, now: Instant) {
        let (group, burst, seq) = (header.group, header.burst, header.seq);
        let Some(i) = self.streams.iter().position(|s| s.group == group) else {
            self.start(None, group, burst, seq, now);
            return;
        };
        let s = &mut self.streams[i];
        s.heard_at = now;
        if s.burst != burst {
            if s.previous == Some(burst) {
                // A straggler of the burst before.
                self.interval.received = self.interval.received.saturating_add(1);
                self.interval.late = self.interval.late.saturating_add(1);
                return;
            }
            let previous = Some(s.burst);
            self.streams.swap_remove(i);
            self.start(previous, group, burst, seq, now);
            return;
        }
        let ahead = seq.wrapping_sub(s.highest) as i16;
        let late = if ahead > 0 {
            let gap = ahead as u16 - 1;
            self.interval.lost = self.interval.lost.saturating_add(u32::from(gap));
            s.heard = if ahead as u16 >= HISTORY {
                1
            } else {
                (s.heard << ahead) | 1
            };
            s.highest = seq;
            // Due by the burst's first frame's arrival, 20 ms a frame on.
            let since_first = seq.wrapping_sub(s.first.0);
            let due = s.first.1 + FRAME * u32::from(since_first) + self.reorder_window;
            now > due
        } else {
            let behind = ahead.unsigned_abs();
            if behind < HISTORY {
                let bit = 1u64 << behind;
                if s.heard & bit != 0 {
                    return; // Duplicate (or frame 0 again): counted once.
                }
                s.heard |= bit;
                // It fills a gap counted lost: taken off this interval's
                // count (a gap already reported stays reported).
                self.interval.lost = self.interval.lost.saturating_sub(1);
            }
            true
        };
        // RFC 3550 §6.4.1: D = (arrival spacing) - (media spacing) from the
        // frame heard before, J += (|D| - J) / 16.
        let (last_seq, last_at) = s.last;
        let media_us = i64::from(seq.wrapping_sub(last_seq) as i16) * FRAME.as_micros() as i64;
        let arrival_us = signed_us(now, last_at);
        let d = (arrival_us - media_us).unsigned_abs();
        self.jitter_x16 = self.jitter_x16 + d - ((self.jitter_x16 + 8) >> 4);
        s.last = (seq, now);
        self.interval.received = self.interval.received.saturating_add(1);
        if late {
            self.interval.late = self.interval.late.saturating_add(1);
        }
    }

    /// Follows `group`'s new burst from its first heard frame.
    fn start(&mut self, previous: Option<u16>, group: GroupId, burst: u16, seq: u16, now: Instant) {
        if self.streams.len() >= MAX_STREAMS {
            if let Some(stalest) = (0..self.streams.len()).min_by_key(|&i| self.streams[i].heard_at)
            {
                self.streams.swap_remove(stalest);
            }
        }
        self.streams.push(Stream {
            group,
            burst,
            previous,
            highest: seq,
            heard: 1,
            first: (seq, now),
            last: (seq, now),
            heard_at: now,
        });
        self.interval.received = self.interval.received.saturating_add(1);
    }

    /// The figures since the last call, or `None` when nothing was heard
    /// since (then there is nothing to report). Starts the next interval.
    pub fn take_report(&mut self) -> Option<Report> {
        if self.interval.received == 0 && self.interval.lost == 0 {
            return None;
        }
        let mut report = std::mem::take(&mut self.interval);
        report.jitter_us = u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX);
        Some(report)
    }

    /// The jitter estimate now, µs.
    pub fn jitter_us(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }
}

/// `a - b` in µs, negative when `a` is earlier (clamped to ±1 hour).
fn signed_us(a: Instant, b: Instant) -> i64 {
    const HOUR_US: i64 = 3_600_000_000;
    match a.checked_duration_since(b) {
        Some(d) => (d.as_micros() as i64).min(HOUR_US),
        None => -((b - a).as_micros() as i64).min(HOUR_US),
    }
}

/// A [`Tracker`] shared by whatever receives voice for a terminal (its
/// datagram reader, an SRTP receiver) and the task that sends its reports,
/// with the report interval.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the report task when the interval changes.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    tracker: Tracker,
    report_every: Option<Duration>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            tracker: Tracker::default(),
            report_every: Some(REPORT_EVERY),
        }
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The tracker is plain counters: a panic elsewhere while holding
        // it leaves nothing half-updated worth refusing.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Tracker::on_frame`]. Call for every voice frame received.
    pub fn on_frame(&self, header: &VoiceHeader, now: Instant) {
        self.state().tracker.on_frame(header, now);
    }

    /// [`Tracker::take_report`]: the figures since the last report.
    pub fn take_report(&self) -> Option<Report> {
        self.state().tracker.take_report()
    }

    /// How often reports are sent while voice is heard (`None`: never).
    /// The next report is due one interval from now.
    pub fn set_report_every(&self, every: Option<Duration>) {
        self.state().report_every = every;
        self.0.changed.notify_one();
    }

    /// The report interval.
    pub fn report_every(&self) -> Option<Duration> {
        self.state().report_every
    }

    /// Starts the task that sends the figures every report interval, while
    /// there are any, on `control` (the control stream's queue). It ends
    /// once every other holder of this tracker (the terminal) or the
    /// control stream is gone.
    pub(crate) fn spawn_reports(&self, control: &mpsc::UnboundedSender<ClientMsg>) {
        let tracker = Arc::downgrade(&self.0);
        let control = control.downgrade();
        tokio::spawn(report_loop(tracker, control).in_current_span());
    }
}

/// [`Shared::spawn_reports`]' task.
async fn report_loop(tracker: Weak<Inner>, control: mpsc::WeakUnboundedSender<ClientMsg>) {
    loop {
        let Some(inner) = tracker.upgrade() else {
            return;
        };
        let every = Shared(inner.clone()).report_every();
        // Holding the tracker while waiting: the terminal's end is seen
        // after the wait. Reports off: look again in a default interval.
        let due = {
            let changed = inner.changed.notified();
            tokio::select! {
                _ = tokio::time::sleep(every.unwrap_or(REPORT_EVERY)) => every.is_some(),
                _ = changed => false,
            }
        };
        drop(inner);
        let Some(inner) = tracker.upgrade() else {
            return;
        };
        if !due {
            continue;
        }
        let Some(report) = Shared(inner).take_report() else {
            continue;
        };
        let Some(control) = control.upgrade() else {
            return;
        };
        if control.send(report.to_msg()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(group: u32, burst: u16, seq: u16) -> VoiceHeader {
        VoiceHeader {
            group: GroupId(group),
            speaker: 7,
            burst,
            seq,
            flags: 0,
        }
    }

    /// Feeds `seqs` of one burst, each arriving `at_ms` after `t0`.
    fn feed(t: &mut Tracker, t0: Instant, burst: u16, frames: &[(u16, u64)]) {
        for &(seq, at_ms) in frames {
            t.on_frame(&frame(5, burst, seq), t0 + Duration::from_millis(at_ms));
        }
    }

    #[test]
    fn a_clean_burst_has_no_loss_no_lateness_and_no_jitter() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        let frames: Vec<(u16, u64)> = (0..250).map(|i| (i, 20 * u64::from(i))).collect();
        feed(&mut t, t0, 1, &frames);
        assert_eq!(
            t.take_report(),
            Some(Report {
                received: 250,
                lost: 0,
                late: 0,
                jitter_us: 0
            })
        );
        assert_eq!(t.take_report(), None, "nothing heard since");
    }

    #[test]
    fn gaps_are_lost_and_a_frame_that_fills_one_is_late() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        // 0 1 2 _ _ 5 6 3 (3 arrives after 6: late, no longer lost).
        feed(
            &mut t,
            t0,
            1,
            &[(0, 0), (1, 20), (2, 40), (5, 100), (6, 120), (3, 125)],
        );
        let r = t.take_report().expect("heard");
        assert_eq!((r.received, r.lost, r.late), (6, 1, 1));
    }

    #[test]
    fn duplicates_count_once() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        feed(&mut t, t0, 1, &[(0, 0), (1, 20), (1, 21), (0, 22), (2, 40)]);
        let r = t.take_report().expect("heard");
        assert_eq!((r.received, r.lost, r.late), (3, 0, 0));
    }

    #[test]
    fn a_frame_behind_its_time_by_more_than_the_window_is_late() {
        let mut t = Tracker::new(Duration::from_millis(60));
        let t0 = Instant::now();
        // Frame 3 due at 60 ms: 120 ms is within the window, frame 4 due
        // at 80 ms arriving at 141 ms is not.
        feed(
            &mut t,
            t0,
            1,
            &[(0, 0), (1, 20), (2, 40), (3, 120), (4, 141)],
        );
        let r = t.take_report().expect("heard");
        assert_eq!((r.received, r.lost, r.late), (5, 0, 1));
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        // Every other frame 10 ms late: |D| alternates 10 ms and 10 ms.
        let frames: Vec<(u16, u64)> = (0..400)
            .map(|i| (i, 20 * u64::from(i) + if i % 2 == 1 { 10 } else { 0 }))
            .collect();
        feed(&mut t, t0, 1, &frames);
        // J converges to the mean |D|, 10 ms.
        let j = t.take_report().expect("heard").jitter_us;
        assert!((9_900..=10_000).contains(&j), "jitter {j} us");
        // The first steps by hand: J1 = 10000/16 = 625, J2 = 625 + (10000 - 625)/16.
        let mut t = Tracker::default();
        feed(&mut t, t0, 1, &[(0, 0), (1, 30)]);
        assert_eq!(t.jitter_us(), 625);
        feed(&mut t, t0, 1, &[(2, 40)]);
        assert_eq!(t.jitter_us(), 1_210);
    }

    #[test]
    fn bursts_start_over_and_stragglers_of_the_last_one_are_late() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        feed(&mut t, t0, 1, &[(0, 0), (1, 20)]);
        // A new burst, heard from frame 3 (joined mid-burst): not lost.
        feed(&mut t, t0, 2, &[(3, 1_000), (4, 1_020)]);
        // A straggler of burst 1.
        feed(&mut t, t0, 1, &[(2, 1_030)]);
        feed(&mut t, t0, 2, &[(5, 1_040)]);
        let r = t.take_report().expect("heard");
        assert_eq!((r.received, r.lost, r.late), (6, 0, 1));
        assert_eq!(t.jitter_us(), 0, "no jitter across bursts");
    }

    #[test]
    fn groups_are_followed_apart_and_bounded() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        for g in 1..=(MAX_STREAMS as u32 + 10) {
            t.on_frame(&frame(g, 1, 0), t0 + Duration::from_millis(u64::from(g)));
            t.on_frame(
                &frame(g, 1, 1),
                t0 + Duration::from_millis(u64::from(g) + 20),
            );
        }
        assert_eq!(t.streams.len(), MAX_STREAMS);
        let r = t.take_report().expect("heard");
        assert_eq!((r.lost, r.late), (0, 0));
    }

    #[tokio::test]
    async fn the_report_task_sends_while_voice_is_heard_and_ends_with_the_terminal() {
        let (control, mut sent) = mpsc::unbounded_channel();
        let link = Shared::default();
        link.spawn_reports(&control);
        link.set_report_every(Some(Duration::from_millis(50)));
        let t0 = Instant::now();
        link.on_frame(&frame(5, 1, 0), t0);
        link.on_frame(&frame(5, 1, 2), t0 + Duration::from_millis(40));
        let msg = tokio::time::timeout(Duration::from_secs(10), sent.recv())
            .await
            .expect("a report within the interval")
            .expect("the task holds no sender of its own");
        assert_eq!(
            msg,
            ClientMsg::LinkReport {
                received: 2,
                lost: 1,
                late: 0,
                jitter_us: 0
            }
        );
        // Nothing heard since: nothing sent.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sent.recv())
                .await
                .is_err(),
            "a report without voice"
        );
        // Off: frames are counted, not reported.
        link.set_report_every(None);
        link.on_frame(&frame(5, 1, 3), t0 + Duration::from_millis(60));
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sent.recv())
                .await
                .is_err()
        );
        assert_eq!(link.take_report().map(|r| r.received), Some(1));
        // The terminal gone: the task ends and drops nothing it should keep.
        link.set_report_every(Some(Duration::from_millis(10)));
        let weak = Arc::downgrade(&link.0);
        drop(link);
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.strong_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(weak.strong_count(), 0, "the task let the tracker go");
        drop(control);
        assert_eq!(sent.recv().await, None, "and holds no sender");
    }

    #[test]
    fn wrapping_frame_numbers_and_hostile_headers_never_panic() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            1,
            &[(65_534, 0), (65_535, 20), (0, 40), (1, 60)],
        );
        let r = t.take_report().expect("heard");
        assert_eq!((r.received, r.lost, r.late), (4, 0, 0));
        // Jumps, repeats and time going backwards: counted, bounded.
        let mut x: u32 = 12_345;
        for i in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let h = frame(1 + (x >> 24) % 70, (x >> 8) as u16 % 3, (x >> 12) as u16);
            let at = if i % 7 == 0 {
                t0
            } else {
                t0 + Duration::from_millis(i)
            };
            t.on_frame(&h, at);
        }
        let r = t.take_report().expect("heard");
        assert!(r.late <= r.received);
        assert!(t.streams.len() <= MAX_STREAMS);
    }
}
