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
    /// is considered over (its END frame was lost). Default 10 (200 ms).
    pub end_after_missing: u32,
    /// Recover a lost frame from the Opus in-band FEC of the next one when
    /// it is here and carries FEC ([`Playout::Recover`]); otherwise every
    /// lost frame is concealed. Default on: terminals encode with FEC. Off
    /// plays a terminal that only conceals, for contrast.
    pub fec: bool,
    /// Whether a packet carries FEC data for the frame before it. Default
    /// [`opus_has_fec`]: libopus codes none when the bit rate leaves no
    /// room for it, and recovering from such a packet would only conceal
    /// under another name.
    pub has_fec: fn(&[u8]) -> bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target_delay: Duration::from_millis(60),
            max_frames: 50,
            frame: Duration::from_millis(20),
            end_after_missing: 10,
            fec: true,
            has_fec: opus_has_fec,
        }
    }
}

/// Whether an Opus packet carries in-band FEC (SILK LBRR data) for the
/// frame before it: the LBRR flag of its first frame, read as libopus 1.5's
/// `opus_packet_has_lbrr` reads it (the flags are the first bits of the
/// SILK range-coded data, RFC 6716 §4.2.3). False for CELT-only packets
/// and packets that do not parse; never panics.
///
/// libopus 1.3 decides per packet whether to code FEC from the bit rate,
/// the bandwidth and the planned loss (`decide_fec`): at 16 kbit/s
/// wideband it codes none at 5-10 % planned loss; at 24 kbit/s it does.
pub fn opus_has_fec(packet: &[u8]) -> bool {
    lbrr_flag(packet).unwrap_or(false)
}

fn lbrr_flag(packet: &[u8]) -> Option<bool> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // RFC 6716 §3.1: configs 0-11 SILK-only, 12-15 hybrid, 16-31 CELT-only.
    let frame_ms = match config {
        0..=11 => [10, 20, 40, 60][usize::from(config & 3)],
        12..=15 => [10, 20][usize::from(config & 1)],
        _ => return Some(false),
    };
    // SILK frames (20 ms) in the first Opus frame.
    let silk_frames: u32 = if frame_ms > 20 { frame_ms / 20 } else { 1 };
    let stereo = toc & 0x4 != 0;
    // Where the first frame's data starts (RFC 6716 §3.2).
    let start = match toc & 3 {
        0 | 1 => 1,
        2 => {
            let size = *packet.get(1)?;
            if size == 0 {
                return Some(false);
            }
            if size < 252 {
                2
            } else {
                3
            }
        }
        _ => {
            let count = *packet.get(1)?;
            let (vbr, padding, frames) = (count & 0x80 != 0, count & 0x40 != 0, count & 0x3f);
            let mut i = 2;
            if padding {
                loop {
                    let b = *packet.get(i)?;
                    i += 1;
                    if b != 255 {
                        break;
                    }
                }
            }
            if frames == 0 {
                return Some(false);
            }
            if vbr && frames > 1 {
                // The sizes of all frames but the last, the first's first.
                if *packet.get(i)? == 0 {
                    return Some(false);
                }
                for _ in 1..frames {
                    let b = *packet.get(i)?;
                    i += if b >= 252 { 2 } else { 1 };
                }
            }
            i
        }
    };
    let first = *packet.get(start)?;
    let mut lbrr = (first >> (7 - silk_frames)) & 1 != 0;
    if stereo {
        lbrr |= (first >> (6 - 2 * silk_frames)) & 1 != 0;
    }
    Some(lbrr)
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
    /// Playouts given up after `end_after_missing` frames with nothing
    /// buffered (the END frame lost, or nothing arrived for 200 ms): what
    /// plays next starts a new timeline.
    pub gave_up: u64,
}

impl Stats {
    /// Adds another buffer's counters.
    pub fn merge(&mut self, o: &Stats) {
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.late += o.late;
        self.played += o.played;
        self.recovered += o.recovered;
        self.concealed += o.concealed;
        self.gave_up += o.gave_up;
    }
}

/// The jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer {
    config: Config,
    /// Frames by their distance from `base` (unwrapped sequence).
    frames: BTreeMap<u64, Bytes>,
    /// Unwrapped sequence number of the next frame to play, once started.
    next: Option<u64>,
    /// Unwrapped sequence number of the burst's END frame, once it came:
    /// nothing after it is played or concealed.
    end: Option<u64>,
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
            end: None,
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
        self.end = None;
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
        self.insert(now, seq, payload);
    }

    /// Accepts the burst's last frame (the talker marked it END): playout
    /// stops after it instead of concealing a silence nobody lost.
    pub fn push_end(&mut self, now: Instant, seq: u16, payload: Bytes) {
        if let Some(s) = self.insert(now, seq, payload) {
            self.end = Some(s);
        }
    }

    /// Buffers a frame; its unwrapped sequence number if it is to be played
    /// (not late).
    fn insert(&mut self, now: Instant, seq: u16, payload: Bytes) -> Option<u64> {
        self.stats.received += 1;
        let s = self.unwrap_seq(seq);
        if self.playing && self.next.is_some_and(|n| s < n) {
            self.stats.late += 1;
            return None;
        }
        if self.frames.insert(s, payload).is_some() {
            self.stats.duplicates += 1;
            return Some(s);
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
        Some(s)
    }

    /// The next frame to play if it is due at `now`; `None` if not yet, or
    /// if the burst ended.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let (next, due) = (self.next?, self.due?);
        if now < due {
            return None;
        }
        if self.end.is_some_and(|end| next > end) {
            // Over: nothing more is due, and a copy of one of its frames
            // arriving now is late, not the start of another playout.
            self.frames.clear();
            self.due = None;
            return None;
        }
        if self.frames.is_empty() && self.missing_run >= self.config.end_after_missing {
            self.stats.gave_up += 1;
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
        let fec = self.config.fec;
        let has_fec = self.config.has_fec;
        match self.frames.get(&(next + 1)).filter(|p| fec && has_fec(p)) {
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

    /// Settings for the one-byte stand-in payloads: every one has FEC.
    fn stand_ins() -> Config {
        Config {
            has_fec: |_| true,
            ..Config::default()
        }
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
        let mut jb = JitterBuffer::new(stand_ins());
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
        assert_eq!(jb.stats().gave_up, 1);
        let t1 = t0 + MS(5000);
        jb.reset();
        jb.push(t1, 3, b(9));
        assert_eq!(jb.pop(t1 + MS(60)), Some(Playout::Frame(b(9))));
    }

    #[test]
    fn the_end_frame_ends_the_burst_without_concealment() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        jb.push(t0, 0, b(0));
        jb.push(t0, 1, b(1));
        jb.push_end(t0, 2, b(2));
        let out = play(&mut jb, t0 + MS(2000));
        assert_eq!(
            out,
            (0..=2).map(|n| Playout::Frame(b(n))).collect::<Vec<_>>()
        );
        assert_eq!(jb.stats().concealed, 0);
        // A copy of a frame of the ended burst is late, not a new playout.
        jb.push(t0 + MS(2001), 1, b(1));
        assert!(play(&mut jb, t0 + MS(3000)).is_empty());
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn a_lost_end_frame_is_concealed_then_the_burst_ends() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(stand_ins());
        jb.push(t0, 0, b(0));
        jb.push_end(t0, 2, b(2));
        let out = play(&mut jb, t0 + MS(2000));
        assert_eq!(
            out,
            vec![
                Playout::Frame(b(0)),
                Playout::Recover { next: b(2) },
                Playout::Frame(b(2)),
            ]
        );
    }

    #[test]
    fn without_fec_every_loss_is_concealed() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config {
            fec: false,
            ..stand_ins()
        });
        jb.push(t0, 0, b(0));
        jb.push(t0, 2, b(2));
        let out = play(&mut jb, t0 + MS(60 + 2 * 20));
        assert_eq!(
            out,
            vec![Playout::Frame(b(0)), Playout::Conceal, Playout::Frame(b(2))]
        );
        let s = jb.stats();
        assert_eq!((s.recovered, s.concealed), (0, 1));
    }

    /// 60 frames of speech encoded at `bitrate` with FEC planned for 10 %
    /// loss, and each decoded losslessly.
    fn opus_burst(bitrate: u32) -> (Vec<Bytes>, Vec<Vec<i16>>) {
        use ptt_codec::audio::{Decoder, Encoder, EncoderConfig, FRAME_SAMPLES};
        let mut speech = crate::speech::Speech::new(5);
        let mut encoder = Encoder::new(EncoderConfig {
            bitrate,
            ..EncoderConfig::default()
        })
        .unwrap();
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let mut packets = Vec::new();
        for _ in 0..60 {
            speech.next_frame(&mut pcm);
            packets.push(encoder.encode(&pcm).unwrap());
        }
        let mut reference = Decoder::new().unwrap();
        let clean = packets
            .iter()
            .map(|p| reference.decode(p).unwrap())
            .collect();
        (packets, clean)
    }

    /// The loudest frame after the codec settled: something to recover.
    fn loudest(clean: &[Vec<i16>]) -> usize {
        (20..58)
            .max_by_key(|&i| clean[i].iter().map(|s| i64::from(*s).pow(2)).sum::<i64>())
            .unwrap()
    }

    /// Plays `packets` through a jitter buffer as they arrive every 20 ms,
    /// all but `lost`, the last marked END.
    fn play_all(packets: &[Bytes], lost: usize) -> (Vec<Playout>, Stats) {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Config::default());
        let mut playout = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let at = t0 + MS(20) * i as u32;
            if i + 1 == packets.len() {
                jb.push_end(at, i as u16, p.clone());
            } else if i != lost {
                jb.push(at, i as u16, p.clone());
            }
            playout.extend(play(&mut jb, at));
        }
        playout.extend(play(&mut jb, t0 + MS(5000)));
        (playout, jb.stats())
    }

    /// Squared error of `x` against `reference`, over their common length.
    fn error(x: &[i16], reference: &[i16]) -> f64 {
        x.iter()
            .zip(reference)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    }

    /// Real Opus at 24 kbit/s: a frame lost between two received ones is
    /// recovered from the next packet's in-band FEC, which brings back much
    /// more of it than concealment does.
    #[test]
    fn a_lost_opus_frame_is_recovered_from_fec_not_concealed() {
        use ptt_codec::audio::{Decoder, FRAME_SAMPLES};
        let (packets, clean) = opus_burst(24_000);
        let lost = loudest(&clean);
        assert!(opus_has_fec(&packets[lost + 1]), "24 kbit/s codes FEC");
        let (playout, stats) = play_all(&packets, lost);
        let mut decoder = Decoder::new().unwrap();
        let mut concealer = Decoder::new().unwrap();
        let mut recovered = None;
        for (i, p) in playout.into_iter().enumerate() {
            match p {
                Playout::Frame(packet) => {
                    assert_ne!(i, lost);
                    decoder.decode(&packet).unwrap();
                    concealer.decode(&packet).unwrap();
                }
                Playout::Recover { next } => {
                    assert_eq!(i, lost, "only the lost frame is recovered");
                    assert_eq!(next, packets[lost + 1], "from the next packet");
                    let fec = decoder.recover_from_next(&next).unwrap();
                    let concealed = concealer.conceal().unwrap();
                    let (fec_error, plc_error) =
                        (error(&fec, &clean[i]), error(&concealed, &clean[i]));
                    assert!(
                        fec_error * 2.0 < plc_error,
                        "FEC error {fec_error:.3e} should be well below concealment's {plc_error:.3e}"
                    );
                    recovered = Some(fec);
                }
                Playout::Conceal => panic!("frame {i} concealed, not recovered"),
            }
        }
        assert_eq!(recovered.map(|r| r.len()), Some(FRAME_SAMPLES));
        assert_eq!((stats.played, stats.recovered, stats.concealed), (59, 1, 0));
    }

    /// Real Opus at 16 kbit/s: libopus codes no FEC, so the lost frame is
    /// concealed, and counted so, rather than "recovered" by a decode that
    /// would only conceal.
    #[test]
    fn a_lost_opus_frame_without_fec_in_the_next_packet_is_concealed() {
        let (packets, clean) = opus_burst(16_000);
        assert!(
            !packets.iter().any(|p| opus_has_fec(p)),
            "16 kbit/s codes none"
        );
        let lost = loudest(&clean);
        let (playout, stats) = play_all(&packets, lost);
        assert_eq!(playout[lost], Playout::Conceal);
        assert_eq!((stats.played, stats.recovered, stats.concealed), (59, 0, 1));
    }

    #[test]
    fn fec_is_read_from_the_packets_lbrr_flag() {
        let (packets, _) = opus_burst(24_000);
        let with = packets.iter().filter(|p| opus_has_fec(p)).count();
        // Speech frames do; frames in pauses (no voice activity) do not.
        assert!(with > 30, "{with} of 60 packets carry FEC at 24 kbit/s");
        // The LBRR flag is the second bit of a 20 ms mono SILK frame.
        let silk_20ms = 1 << 3;
        assert!(opus_has_fec(&[silk_20ms, 0b0100_0000]));
        assert!(!opus_has_fec(&[silk_20ms, 0b1000_0000]));
        // 60 ms: three VAD flags first, then LBRR.
        assert!(opus_has_fec(&[3 << 3, 0b0001_0000]));
        // Stereo: the second channel's LBRR flag counts too.
        assert!(opus_has_fec(&[silk_20ms | 0x4, 0b0001_0000]));
        // Code 2 (two frames, sizes given), code 3 with padding and sizes.
        assert!(opus_has_fec(&[silk_20ms | 2, 1, 0b0100_0000, 0]));
        assert!(opus_has_fec(&[
            silk_20ms | 3,
            0xc2,
            1,
            1,
            0b0100_0000,
            0,
            0
        ]));
        assert!(!opus_has_fec(&[silk_20ms | 2, 0, 0]), "empty first frame");
        // CELT-only packets have no LBRR.
        assert!(!opus_has_fec(&[16 << 3, 0xff]));
    }

    #[test]
    fn fec_detection_never_panics_on_garbage() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000 {
            let packet: Vec<u8> = (0..len % 9)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = opus_has_fec(&packet);
        }
        for toc in 0..=255u8 {
            for tail in [&[][..], &[255], &[255, 255], &[0x3f, 255, 255]] {
                let mut p = vec![toc];
                p.extend_from_slice(tail);
                let _ = opus_has_fec(&p);
            }
        }
    }
}
