//! How a relayed talk burst becomes the packets of an Ogg Opus stream
//! (RFC 7845), without I/O: the header packets, each audio packet's
//! granule position, and the packets that fill the gaps lost frames leave.
//!
//! The gateway records voice as it relayed it: the talker's Opus packets,
//! never re-encoded. The driver feeds a [`Framer`] the relayed frames of one
//! burst in arrival order ([`Framer::push`]) and writes what comes out into
//! Ogg pages (the `ogg` crate does the container); this module decides only
//! what the packets are and when they play.
//!
//! Rules, with the RFC sections they come from:
//! - Granule positions count 48 kHz samples whatever the input rate
//!   (RFC 7845 §4): a packet's duration comes from its TOC byte (RFC 6716
//!   §3.1), so 10, 20, 40 or 60 ms frames and multi-frame packets all time
//!   right. The granule of a packet is the total duration up to and including
//!   it; a player discards [`PRE_SKIP`] samples from the start.
//! - A frame that never reached the gateway, or that the recorder dropped,
//!   leaves a hole in the sequence numbers. A hole is filled so that the
//!   audio after it keeps its time (RFC 7845 §4.1, "repairing gaps"): one
//!   1-byte packet per missing frame, the previous packet's TOC with frame
//!   count code 0 and no frame data, which a decoder treats as a lost frame
//!   (RFC 6716 §3.2.1: a zero-length frame) and conceals.
//! - A frame that arrives after a later one (reordered or duplicated) cannot
//!   be put back in an Ogg stream, whose granules only grow: it is left out
//!   and counted as late.
//! - A packet whose TOC names no valid duration (RFC 6716 §3.2.5: code 3
//!   with no frames, or more than 120 ms) is not written; its slot is filled
//!   like a lost frame and it is counted as invalid. The relay passes such
//!   packets on (the gateway never decodes voice); only the recording
//!   refuses them, so a hostile talker cannot make an unplayable file.

use bytes::Bytes;

/// Samples a player discards at the start, at 48 kHz: libopus's encoder
/// look-ahead (`OPUS_GET_LOOKAHEAD`: 2.5 ms + 4 ms at any rate, 312 samples
/// at 48 kHz), what `opusenc` writes for the same encoder. Terminals encode
/// with libopus (`ptt_codec::audio`).
pub const PRE_SKIP: u16 = 312;

/// Sample rate of granule positions (RFC 7845 §4).
pub const GRANULE_RATE: u32 = 48_000;

/// The longest hole filled, in packets: a minute of 20 ms frames, twice the
/// default talk-time limit. A longer jump in sequence numbers is filled this
/// far and counted in [`Stats::unfilled`]: it costs the file 2 bytes per
/// filled packet, so a talker that jumps its sequence numbers cannot make a
/// big file.
pub const MAX_FILL: u32 = 3_000;

/// The longest packet RFC 6716 allows, in 48 kHz samples (120 ms).
const MAX_PACKET_SAMPLES: u32 = 5_760;

/// An Opus packet whose TOC does not give a valid duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Opus packet's TOC gives no valid duration")]
pub struct InvalidPacket;

/// The first packet of the stream: `OpusHead` (RFC 7845 §5.1), mono,
/// mapping family 0, `input_rate` the rate the talker encoded at (for a
/// decoder that wants to resample back; informational).
pub fn head(input_rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1); // version
    h.push(1); // channels
    h.extend_from_slice(&PRE_SKIP.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family: mono/stereo, no table
    h
}

/// The second packet: `OpusTags` (RFC 7845 §5.2) with `vendor` and the
/// `NAME=value` comments given.
pub fn tags<'a>(vendor: &str, comments: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, s: &str) {
        // A comment longer than 4 GiB is not something a caller makes.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..len as usize]);
    }
    let comments: Vec<&str> = comments.into_iter().collect();
    let mut t = Vec::new();
    t.extend_from_slice(b"OpusTags");
    put(&mut t, vendor);
    t.extend_from_slice(&(comments.len() as u32).to_le_bytes());
    for c in comments {
        put(&mut t, c);
    }
    t
}

/// Samples (at 48 kHz) of one frame of TOC configuration `config` (0-31),
/// RFC 6716 §3.1 Table 2.
fn frame_samples(config: u8) -> u32 {
    match config {
        // SILK-only: 10, 20, 40, 60 ms.
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        // Hybrid: 10, 20 ms.
        12..=15 => [480, 960][usize::from(config % 2)],
        // CELT-only: 2.5, 5, 10, 20 ms.
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    }
}

/// Frames in an Opus packet, from its TOC (and frame count byte for code
/// 3), RFC 6716 §3.2.
fn frame_count(packet: &[u8]) -> Result<u32, InvalidPacket> {
    let toc = *packet.first().ok_or(InvalidPacket)?;
    match toc & 0x3 {
        0 => Ok(1),
        1 | 2 => Ok(2),
        _ => {
            let m = u32::from(*packet.get(1).ok_or(InvalidPacket)? & 0x3f);
            if m == 0 {
                return Err(InvalidPacket);
            }
            Ok(m)
        }
    }
}

/// Duration of an Opus packet in 48 kHz samples, from its TOC.
pub fn packet_samples(packet: &[u8]) -> Result<u32, InvalidPacket> {
    let toc = *packet.first().ok_or(InvalidPacket)?;
    let total = frame_samples(toc >> 3) * frame_count(packet)?;
    if total > MAX_PACKET_SAMPLES {
        return Err(InvalidPacket);
    }
    Ok(total)
}

/// One packet of the Ogg stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The Opus packet: the relayed one, or a 1-byte filler.
    pub data: Bytes,
    /// Granule position after this packet: 48 kHz samples from the start
    /// of the stream, pre-skip included.
    pub granule: u64,
    /// A filler for a frame that is not in the recording.
    pub filler: bool,
}

/// What happened to the frames of one burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Relayed packets written.
    pub frames: u64,
    /// Packets written to fill holes (lost, dropped or invalid frames).
    pub filled: u64,
    /// Missing frames past [`MAX_FILL`] in one hole, not filled.
    pub unfilled: u64,
    /// Frames that came after a later one, left out.
    pub late: u64,
    /// Packets whose TOC gives no valid duration, left out (filled).
    pub invalid: u64,
}

/// Frames one burst's relayed packets into Ogg Opus packets. Make one per
/// burst; feed it every relayed frame of the burst in the order the
/// gateway relayed them.
#[derive(Debug, Clone, Default)]
pub struct Framer {
    /// Sequence number the next frame should carry, once one was seen.
    next: Option<u16>,
    /// Granule after the last packet out.
    granule: u64,
    /// TOC and duration of the last valid packet: what a filler copies.
    last: Option<(u8, u32)>,
    stats: Stats,
}

impl Framer {
    /// A framer for a burst that has not sent a frame yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Granule position after the last packet out: the stream's length in
    /// 48 kHz samples, pre-skip included.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// What happened to the frames so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Takes the relayed frame `seq` of the burst with Opus packet `opus`,
    /// and appends to `out` the packets to write for it: fillers for the
    /// frames missing before it, then the frame itself (nothing for a late
    /// frame). Frames of a burst are numbered from 0 (PROTOCOL.md), so a
    /// first frame numbered above 0 is preceded by fillers too.
    pub fn push(&mut self, seq: u16, opus: Bytes, out: &mut Vec<Packet>) {
        let expected = self.next.unwrap_or(0);
        // Forward distance, wrapping: 0..=32767 ahead is a hole of that
        // many; anything else is behind (late or duplicate).
        let ahead = seq.wrapping_sub(expected);
        if ahead >= 0x8000 {
            self.stats.late += 1;
            return;
        }
        let valid = packet_samples(&opus).ok();
        // What a filler looks like: the last packet, else this one.
        let model = self.last.or_else(|| valid.map(|d| (opus[0], d)));
        let Some((toc, duration)) = model else {
            // An invalid packet before any valid one: nothing to time a
            // filler by yet, so its slot stays a hole, filled once a valid
            // packet comes.
            self.stats.invalid += 1;
            return;
        };
        self.fill(u32::from(ahead), toc, duration, out);
        self.next = Some(seq.wrapping_add(1));
        match valid {
            Some(duration) => {
                self.last = Some((opus[0], duration));
                self.granule += u64::from(duration);
                self.stats.frames += 1;
                out.push(Packet {
                    data: opus,
                    granule: self.granule,
                    filler: false,
                });
            }
            None => {
                self.stats.invalid += 1;
                if let Some((toc, duration)) = self.last {
                    self.fill(1, toc, duration, out);
                }
            }
        }
    }

    /// Appends fillers for `missing` frames, each as long as a packet of
    /// `duration` with TOC `toc` (as many 1-frame fillers as that packet had
    /// frames), at most [`MAX_FILL`] packets.
    fn fill(&mut self, missing: u32, toc: u8, duration: u32, out: &mut Vec<Packet>) {
        if missing == 0 {
            return;
        }
        let filler_toc = toc & !0x3; // code 0: one frame, here of length 0
        let per_frame = frame_samples(toc >> 3);
        let per_missing = (duration / per_frame).max(1);
        let wanted = u64::from(missing) * u64::from(per_missing);
        let n = wanted.min(u64::from(MAX_FILL));
        let filler = Bytes::copy_from_slice(&[filler_toc]);
        for _ in 0..n {
            self.granule += u64::from(per_frame);
            out.push(Packet {
                data: filler.clone(),
                granule: self.granule,
                filler: true,
            });
        }
        self.stats.filled += n;
        self.stats.unfilled += (wanted - n) / u64::from(per_missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TOC of a 20 ms SILK wideband mono packet, code 0 (what the
    /// terminals' libopus encoder makes at 16 kbit/s).
    const SILK_WB_20: u8 = 9 << 3;

    fn pkt(toc: u8, len: usize) -> Bytes {
        let mut v = vec![toc];
        v.resize(len, 0x55);
        Bytes::from(v)
    }

    fn push_all(framer: &mut Framer, frames: &[(u16, Bytes)]) -> Vec<Packet> {
        let mut out = Vec::new();
        for (seq, p) in frames {
            framer.push(*seq, p.clone(), &mut out);
        }
        out
    }

    #[test]
    fn headers_follow_rfc_7845() {
        let h = head(16_000);
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[8], 1, "version");
        assert_eq!(h[9], 1, "mono");
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312, "pre-skip");
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 16_000);
        assert_eq!(&h[16..], &[0, 0, 0], "gain 0, mapping family 0");
        let t = tags("ptt-gateway", ["PTT_GROUP=7", "PTT_SPEAKER=501"]);
        assert_eq!(&t[..8], b"OpusTags");
        assert_eq!(u32::from_le_bytes(t[8..12].try_into().unwrap()), 11);
        assert_eq!(&t[12..23], b"ptt-gateway");
        assert_eq!(u32::from_le_bytes(t[23..27].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(t[27..31].try_into().unwrap()), 11);
        assert_eq!(&t[31..42], b"PTT_GROUP=7");
        assert_eq!(t.len(), 42 + 4 + 15);
    }

    #[test]
    fn durations_come_from_the_toc() {
        // SILK NB 10/20/40/60 ms.
        for (config, samples) in [(0u8, 480), (1, 960), (2, 1920), (3, 2880)] {
            assert_eq!(packet_samples(&[config << 3]), Ok(samples));
        }
        assert_eq!(packet_samples(&[SILK_WB_20]), Ok(960));
        // Hybrid SWB 10 ms; CELT FB 2.5 ms and 20 ms.
        assert_eq!(packet_samples(&[12 << 3]), Ok(480));
        assert_eq!(packet_samples(&[28 << 3]), Ok(120));
        assert_eq!(packet_samples(&[31 << 3]), Ok(960));
        // Two frames (codes 1 and 2), stereo bit ignored.
        assert_eq!(packet_samples(&[SILK_WB_20 | 0x4 | 1, 0, 0]), Ok(1920));
        assert_eq!(packet_samples(&[SILK_WB_20 | 2, 1, 0]), Ok(1920));
        // Code 3: the count byte; 6 x 20 ms = 120 ms is the longest.
        assert_eq!(packet_samples(&[SILK_WB_20 | 3, 6]), Ok(5760));
        assert_eq!(packet_samples(&[SILK_WB_20 | 3, 7]), Err(InvalidPacket));
        assert_eq!(packet_samples(&[SILK_WB_20 | 3, 0]), Err(InvalidPacket));
        assert_eq!(packet_samples(&[SILK_WB_20 | 3]), Err(InvalidPacket));
        assert_eq!(packet_samples(&[]), Err(InvalidPacket));
        // 48 x 2.5 ms = 120 ms passes; 49 does not.
        assert_eq!(packet_samples(&[(28 << 3) | 3, 48]), Ok(5760));
        assert_eq!(packet_samples(&[(28 << 3) | 3, 49]), Err(InvalidPacket));
    }

    #[test]
    fn granules_count_48khz_samples_per_packet() {
        let mut f = Framer::new();
        let frames: Vec<_> = (0..5).map(|s| (s, pkt(SILK_WB_20, 40))).collect();
        let out = push_all(&mut f, &frames);
        assert_eq!(
            out.iter().map(|p| p.granule).collect::<Vec<_>>(),
            [960, 1920, 2880, 3840, 4800]
        );
        assert!(out.iter().all(|p| !p.filler && p.data.len() == 40));
        // The relayed packet itself, not a copy.
        assert_eq!(out[0].data.as_ptr(), frames[0].1.as_ptr());
        assert_eq!(f.granule(), 4800);
        assert_eq!(f.stats().frames, 5);
        // 40 ms packets advance twice as far.
        let mut f = Framer::new();
        let out = push_all(&mut f, &[(0, pkt(10 << 3, 80)), (1, pkt(10 << 3, 80))]);
        assert_eq!(out[1].granule, 3840);
    }

    #[test]
    fn a_hole_is_filled_with_toc_only_packets_that_keep_time() {
        let mut f = Framer::new();
        let out = push_all(
            &mut f,
            &[
                (0, pkt(SILK_WB_20 | 0x4, 40)),
                (1, pkt(SILK_WB_20 | 0x4, 40)),
                // 2, 3, 4 lost
                (5, pkt(SILK_WB_20 | 0x4, 40)),
            ],
        );
        assert_eq!(out.len(), 6);
        for filler in &out[2..5] {
            assert!(filler.filler);
            // Same configuration and stereo bit, code 0, no frame data.
            assert_eq!(&filler.data[..], &[SILK_WB_20 | 0x4]);
        }
        assert_eq!(out[5].granule, 6 * 960, "frame 5 plays where it was said");
        assert_eq!(
            f.stats(),
            Stats {
                frames: 3,
                filled: 3,
                ..Stats::default()
            }
        );
    }

    #[test]
    fn a_hole_after_multi_frame_packets_is_filled_frame_by_frame() {
        // Code 1: two 20 ms frames per packet; one packet lost is 40 ms.
        let mut f = Framer::new();
        let two = pkt(SILK_WB_20 | 1, 41);
        let out = push_all(&mut f, &[(0, two.clone()), (2, two)]);
        assert_eq!(out.len(), 4);
        assert_eq!(out[1].granule, 1920 + 960);
        assert_eq!(out[2].granule, 1920 + 1920);
        assert_eq!(out[3].granule, 3 * 1920);
    }

    #[test]
    fn a_burst_whose_first_frames_were_lost_starts_with_fillers() {
        let mut f = Framer::new();
        let out = push_all(&mut f, &[(2, pkt(SILK_WB_20, 40))]);
        assert_eq!(out.len(), 3);
        assert!(out[0].filler && out[1].filler && !out[2].filler);
        assert_eq!(out[2].granule, 3 * 960);
    }

    #[test]
    fn late_and_duplicate_frames_are_left_out() {
        let mut f = Framer::new();
        let p = pkt(SILK_WB_20, 40);
        let out = push_all(
            &mut f,
            &[
                (0, p.clone()),
                (2, p.clone()),
                (1, p.clone()),
                (2, p.clone()),
            ],
        );
        // 0, filler for 1, 2; the late 1 and the duplicate 2 are dropped.
        assert_eq!(out.len(), 3);
        assert_eq!(f.stats().late, 2);
        assert_eq!(f.granule(), 3 * 960);
        // Wrapping: 65535 then 0 is in order.
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.next = Some(65_535);
        f.push(65_535, p.clone(), &mut out);
        f.push(0, p, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(f.stats().late, 0);
    }

    #[test]
    fn an_invalid_packet_becomes_a_filler() {
        let mut f = Framer::new();
        let bad = Bytes::from_static(&[SILK_WB_20 | 3, 0]);
        let out = push_all(&mut f, &[(0, pkt(SILK_WB_20, 40)), (1, bad.clone())]);
        assert_eq!(out.len(), 2);
        assert!(out[1].filler);
        assert_eq!(f.granule(), 1920);
        assert_eq!(f.stats().invalid, 1);
        // Before any valid packet there is nothing to time a filler by.
        let mut f = Framer::new();
        let out = push_all(&mut f, &[(0, bad), (1, pkt(SILK_WB_20, 40))]);
        assert_eq!(out.len(), 2, "a filler for frame 0, then frame 1");
        assert_eq!(out[1].granule, 1920);
    }

    #[test]
    fn hostile_sequences_and_packets_still_make_a_valid_stream() {
        // Any sequence numbers and bytes a talker sends: every packet out
        // has a valid duration, granules grow by exactly it, and fillers
        // stay bounded per frame in.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let mut f = Framer::new();
            let mut out = Vec::new();
            let mut seq = (next() % 4) as u16;
            let frames_in = 50;
            for _ in 0..frames_in {
                seq = match next() % 6 {
                    0 => next() as u16,       // a jump anywhere
                    1 => seq.wrapping_sub(1), // late
                    2 => seq,                 // duplicate
                    _ => seq.wrapping_add(1), // in order
                };
                let len = 1 + (next() % 8) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                f.push(seq, Bytes::from(bytes), &mut out);
            }
            let mut granule = 0;
            for p in &out {
                let d = packet_samples(&p.data).expect("only valid packets out");
                assert!(d > 0);
                granule += u64::from(d);
                assert_eq!(p.granule, granule);
            }
            assert_eq!(f.granule(), granule);
            let s = f.stats();
            // At most one capped hole and one invalid slot (up to 48 frames)
            // per frame in.
            assert!(s.filled <= (u64::from(MAX_FILL) + 48) * frames_in);
            assert_eq!(s.frames, out.iter().filter(|p| !p.filler).count() as u64);
        }
    }

    #[test]
    fn a_huge_jump_is_filled_only_so_far() {
        let mut f = Framer::new();
        let p = pkt(SILK_WB_20, 40);
        let out = push_all(&mut f, &[(0, p.clone()), (30_000, p)]);
        assert_eq!(out.len(), 2 + MAX_FILL as usize);
        assert_eq!(f.stats().filled, u64::from(MAX_FILL));
        assert_eq!(f.stats().unfilled, 29_999 - u64::from(MAX_FILL));
    }
}
