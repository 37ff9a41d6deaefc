//! A receive-side jitter buffer for one talker's burst: holds frames for a
//! short target delay, then plays one per frame interval, telling the
//! decoder when to recover a lost frame from FEC or conceal it.
//!
//! Sans-I/O: time comes in as `now`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Delay between the first frame's arrival and its playout. Default
    /// 60 ms: three frames of cellular jitter.
    pub target_delay: Duration,
    /// Frames held at most; older ones are dropped. Default 50 (1 s).
    pub max_frames: usize,
    /// Frame duration. Default 20 ms.
    pub frame: Duration,
    /// Missing frames in a row, with nothing buffered, after which the burst
    /// is considered over. Default 10 (200 ms).
    pub end_after_missing: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target_delay: Duration::from_millis(60),
            max_frames: 50,
            frame: Duration::from_millis(20),
            end_after_missing: 10,
        }
    }
}

/// What to play next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Frame(Bytes),
    /// This frame was lost but the next one is here: decode its FEC.
    Recover {
        /// The following packet.
        next: Bytes,
    },
    /// Lost: conceal.
    Conceal,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames pushed.
    pub received: u64,
    /// Frames pushed twice.
    pub duplicates: u64,
    /// Frames that arrived after their playout time.
    pub late: u64,
    /// Frames played as received.
    pub played: u64,
    /// Frames recovered through FEC.
    pub recovered: u64,
    /// Frames concealed.
    pub concealed: u64,
}

/// The jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    config: Config,
    /// Frames by their distance from `base` (unwrapped sequence).
    frames: BTreeMap<u64, Bytes>,
    /// Unwrapped sequence number of the next frame to play, once started.
    next: Option<u64>,
    /// When the next frame is due.
    due: Option<Instant>,
    /// Last raw sequence number seen and its unwrapped value.
    last_seq: Option<(u16, u64)>,
    missing_run: u32,
    /// Playout has started: frames before `next` are late.
    playing: bool,
    stats: Stats,
}

impl JitterBuffer {
    /// An empty buffer.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            frames: BTreeMap::new(),
            next: None,
            due: None,
            last_seq: None,
            missing_run: 0,
            playing: false,
            stats: Stats::default(),
        }
    }

    /// Forgets everything but the counters: call when a new burst starts.
    pub fn reset(&mut self) {
        self.frames.clear();
        self.next = None;
        self.due = None;
        self.last_seq = None;
        self.missing_run = 0;
        self.playing = false;
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Maps a wrapping u16 to a monotonic u64 near the last one seen.
    fn unwrap_seq(&mut self, seq: u16) -> u64 {
        let value = match self.last_seq {
            None => 1 << 32,
            Some((last, base)) => {
                let delta = seq.wrapping_sub(last) as i16;
                base.wrapping_add_signed(i64::from(delta))
            }
        };
        if self.last_seq.is_none_or(|(_, v)| value > v) {
            self.last_seq = Some((seq, value));
        }
        value
    }

    /// Accepts a received frame.
    pub fn push(&mut self, now: Instant, seq: u16, payload: Bytes) {
        self.stats.received += 1;
        let s = self.unwrap_seq(seq);
        if self.playing && self.next.is_some_and(|n| s < n) {
            self.stats.late += 1;
            return;
        }
        if self.frames.insert(s, payload).is_some() {
            self.stats.duplicates += 1;
            return;
        }
        if self.next.is_none() {
            self.next = Some(s);
            self.due = Some(now + self.config.target_delay);
        }
        while self.frames.len() > self.config.max_frames {
            self.frames.pop_first();
        }
        // A frame older than what is buffered may start playout earlier.
        if let (Some(n), Some((&first, _))) = (self.next, self.frames.first_key_value()) {
            if first < n {
                self.next = Some(first);
            }
        }
    }

    /// The next frame to play if it is due at `now`; `None` if not yet, or
    /// if the burst ended.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let (next, due) = (self.next?, self.due?);
        if now < due {
            return None;
        }
        if self.frames.is_empty() && self.missing_run >= self.config.end_after_missing {
            self.reset();
            return None;
        }
        self.playing = true;
        self.next = Some(next + 1);
        self.due = Some(due + self.config.frame);
        // Frames older than the playout point can no longer be played.
        while self
            .frames
            .first_key_value()
            .is_some_and(|(&k, _)| k < next)
        {
            self.frames.pop_first();
        }
        if let Some(p) = self.frames.remove(&next) {
            self.missing_run = 0;
            self.stats.played += 1;
            return Some(Playout::Frame(p));
        }
        self.missing_run += 1;
        match self.frames.get(&(next + 1)) {
            Some(p) => {
                self.stats.recovered += 1;
                Some(Playout::Recover { next: p.clone() })
            }
            None => {
                self.stats.concealed += 1;
                Some(Playout::Conceal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn play(jb: &mut JitterBuffer, at: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(at)).collect()
    }

    #[test]
    fn plays_in_order_after_the_target_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 10, b(10));
        jb.push(t0 + MS(20), 11, b(11));
        assert!(jb.pop(t0 + MS(59)).is_none());
        assert_eq!(jb.pop(t0 + MS(60)), Some(Playout::Frame(b(10))));
        assert!(jb.pop(t0 + MS(79)).is_none());
        assert_eq!(jb.pop(t0 + MS(80)), Some(Playout::Frame(b(11))));
    }

    #[test]
    fn reorders_within_the_delay() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 2, b(2));
        jb.push(t0 + MS(5), 1, b(1));
        jb.push(t0 + MS(6), 3, b(3));
        let out = play(&mut jb, t0 + MS(100));
        assert_eq!(
            out[..3],
            [
                Playout::Frame(b(1)),
                Playout::Frame(b(2)),
                Playout::Frame(b(3))
            ]
        );
    }

    #[test]
    fn loss_is_recovered_or_concealed() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 0, b(0));
        jb.push(t0, 2, b(2));
        jb.push(t0, 5, b(5));
        let out = play(&mut jb, t0 + MS(60 + 5 * 20));
        assert_eq!(
            out,
            vec![
                Playout::Frame(b(0)),
                Playout::Recover { next: b(2) },
                Playout::Frame(b(2)),
                Playout::Conceal,
                Playout::Recover { next: b(5) },
                Playout::Frame(b(5)),
            ]
        );
        let s = jb.stats();
        assert_eq!((s.played, s.recovered, s.concealed), (3, 2, 1));
    }

    #[test]
    fn duplicates_and_late_frames_are_counted() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 7, b(7));
        jb.push(t0, 7, b(7));
        play(&mut jb, t0 + MS(60));
        jb.push(t0 + MS(61), 7, b(7));
        let s = jb.stats();
        assert_eq!((s.received, s.duplicates, s.late), (3, 1, 1));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 65534, b(1));
        jb.push(t0, 65535, b(2));
        jb.push(t0, 0, b(3));
        jb.push(t0, 1, b(4));
        let out = play(&mut jb, t0 + MS(60 + 3 * 20));
        assert_eq!(
            out,
            (1..=4).map(|n| Playout::Frame(b(n))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_silent_burst_ends_and_the_next_starts_fresh() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 100, b(1));
        let out = play(&mut jb, t0 + MS(2000));
        assert_eq!(
            out.len(),
            11,
            "one frame, then ten concealed, then the burst ends"
        );
        assert!(jb.pop(t0 + MS(3000)).is_none());
        let t1 = t0 + MS(5000);
        jb.reset();
        jb.push(t1, 3, b(9));
        assert_eq!(jb.pop(t1 + MS(60)), Some(Playout::Frame(b(9))));
    }
}
