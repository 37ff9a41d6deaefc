//! RTCP receiver reports (RFC 3550 §6.4.2) and the reception statistics
//! they carry (RFC 3550 Appendix A.3 and A.8): what a listener tells the
//! gateway about how it hears, inside SRTCP.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|    RC   |   PT=RR=201   |             length            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     SSRC of packet sender                     |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |                 SSRC_1 (SSRC of first source)                 |  report
//! | fraction lost |       cumulative number of packets lost       |  block,
//! |           extended highest sequence number received           |  24 bytes,
//! |                      interarrival jitter                      |  RC of them
//! |                         last SR (LSR)                         |
//! |                   delay since last SR (DLSR)                  |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! ```

use super::rtp::VERSION;
use super::Error;

/// RTCP packet type of a receiver report.
pub const RECEIVER_REPORT: u8 = 201;

/// Bytes of one report block.
pub const BLOCK_LEN: usize = 24;

/// The most report blocks one receiver report holds (5-bit count).
pub const MAX_BLOCKS: usize = 31;

/// One report block: how the reporter receives one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since reception began (24-bit signed: duplicates can make
    /// it negative).
    pub cumulative_lost: i32,
    /// Highest sequence number received, extended by the wrap count.
    pub highest_sequence: u32,
    /// Interarrival jitter estimate, in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last sender report (0 if
    /// none).
    pub last_sr: u32,
    /// Delay since that sender report, in 1/65536 s (0 if none).
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn parse(block: &[u8; BLOCK_LEN]) -> ReportBlock {
        let word = |at: usize| {
            u32::from_be_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
        };
        // 24-bit two's complement: shift into the top of an i32 and back.
        let lost = ((word(4) << 8) as i32) >> 8;
        ReportBlock {
            ssrc: word(0),
            fraction_lost: block[4],
            cumulative_lost: lost,
            highest_sequence: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        // Clamp to the 24-bit signed range, as RFC 3550 §6.4.1 asks.
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0xff_ffff;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.highest_sequence.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        out[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// One RTCP packet of a compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Packet type (200 SR, 201 RR, 202 SDES, 203 BYE, ...).
    pub packet_type: u8,
    /// The 5-bit count field (report blocks for SR and RR).
    pub count: u8,
    /// The packet after its 4-byte header, padding removed.
    pub body: &'a [u8],
}

/// Iterates over the packets of an RTCP compound packet; see [`packets`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

/// The packets of the compound RTCP packet `compound` (what
/// [`Receiver::unprotect_rtcp`](super::Receiver::unprotect_rtcp) leaves).
/// A packet that is not version 2, or whose length runs past the compound,
/// yields `Err` once and ends the iteration.
pub fn packets(compound: &[u8]) -> Packets<'_> {
    Packets { rest: compound }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<Packet<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let head = self.rest.get(..4).ok_or(Error::Truncated)?;
            if head[0] >> 6 != VERSION {
                return Err(Error::NotRtp);
            }
            let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let len = 4 * (words + 1);
            let packet = self.rest.get(..len).ok_or(Error::Truncated)?;
            let mut body = &packet[4..];
            if head[0] & 0x20 != 0 {
                let pad = usize::from(*body.last().ok_or(Error::BadPadding)?);
                if pad == 0 || pad > body.len() {
                    return Err(Error::BadPadding);
                }
                body = &body[..body.len() - pad];
            }
            Ok((
                Packet {
                    packet_type: head[1],
                    count: head[0] & 0x1f,
                    body,
                },
                len,
            ))
        })();
        match parsed {
            Ok((packet, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// A parsed receiver report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// Who reports.
    pub reporter: u32,
    blocks: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    /// Reads a receiver report from one [`Packet`] of type
    /// [`RECEIVER_REPORT`]: [`Error::NotRtcp`] for another type,
    /// [`Error::Truncated`] if the count promises more blocks than the body
    /// holds (profile extensions after the blocks are ignored).
    pub fn parse(packet: &Packet<'a>) -> Result<ReceiverReport<'a>, Error> {
        if packet.packet_type != RECEIVER_REPORT {
            return Err(Error::NotRtcp);
        }
        let reporter = packet.body.get(..4).ok_or(Error::Truncated)?;
        let blocks_len = BLOCK_LEN * usize::from(packet.count);
        let blocks = packet.body.get(4..4 + blocks_len).ok_or(Error::Truncated)?;
        Ok(ReceiverReport {
            reporter: u32::from_be_bytes([reporter[0], reporter[1], reporter[2], reporter[3]]),
            blocks,
        })
    }

    /// The report blocks, one per source.
    pub fn blocks(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        self.blocks.chunks_exact(BLOCK_LEN).filter_map(|block| {
            // chunks_exact yields BLOCK_LEN-byte slices only.
            block.try_into().ok().map(ReportBlock::parse)
        })
    }
}

/// Writes a receiver report from `reporter` with `blocks` (at most
/// [`MAX_BLOCKS`]) to the start of `out`; returns its length, ready for
/// [`Sender::protect_rtcp`](super::Sender::protect_rtcp).
pub fn write_receiver_report(
    reporter: u32,
    blocks: &[ReportBlock],
    out: &mut [u8],
) -> Result<usize, Error> {
    if blocks.len() > MAX_BLOCKS {
        return Err(Error::Malformed);
    }
    let len = 8 + BLOCK_LEN * blocks.len();
    let out = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    // At most 31 blocks (checked above): the count fits 5 bits and the
    // length in words fits 16.
    out[0] = (VERSION << 6) | blocks.len() as u8;
    out[1] = RECEIVER_REPORT;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&reporter.to_be_bytes());
    for (block, slot) in blocks.iter().zip(out[8..].chunks_exact_mut(BLOCK_LEN)) {
        block.write(slot);
    }
    Ok(len)
}

/// Reception statistics of one source, fed with every packet
/// [`Receiver::unprotect`](super::Receiver::unprotect) accepted, read as a
/// [`ReportBlock`] every reporting interval (RFC 3550 Appendix A.3, A.8).
///
/// The receiver's replay window already refuses duplicates and extends
/// sequence numbers with the rollover counter, so the packet index is the
/// extended sequence number and no packet is counted twice.
#[derive(Debug, Clone, Default)]
pub struct Reception {
    /// Index of the first packet received.
    base: Option<u64>,
    /// Highest index received.
    highest: u64,
    /// Packets received since the first.
    received: u64,
    /// `expected` and `received` at the previous report.
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet, in RTP clock units.
    transit: Option<u32>,
    /// Jitter estimate, in RTP clock units times 16 (A.8's integer form).
    jitter_x16: u32,
}

impl Reception {
    /// Records one accepted packet: its index, its RTP timestamp, and its
    /// arrival time converted to the same RTP clock (for Opus, 48 kHz:
    /// milliseconds x 48), wrapping.
    pub fn on_packet(&mut self, index: u64, timestamp: u32, arrival: u32) {
        match self.base {
            None => {
                self.base = Some(index);
                self.highest = index;
            }
            Some(_) => self.highest = self.highest.max(index),
        }
        self.received += 1;
        // A.8: D = (arrival_j - arrival_i) - (ts_j - ts_i), wrapping in u32.
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(previous) = self.transit {
            let d = (transit.wrapping_sub(previous) as i32).unsigned_abs();
            // J += (|D| - J) / 16, kept times 16.
            self.jitter_x16 = self
                .jitter_x16
                .wrapping_add(d)
                .wrapping_sub((self.jitter_x16 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// The report block on source `ssrc` for the interval since the previous
    /// call (fraction lost) and since reception began (the rest). Call it
    /// once per reporting interval; `None` before any packet.
    pub fn report(&mut self, ssrc: u32) -> Option<ReportBlock> {
        let base = self.base?;
        let expected = self.highest - base + 1;
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            // lost_interval <= expected_interval, so the quotient is <= 256;
            // 256 (all lost) is reported as 255.
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(lost).unwrap_or(i32::MAX),
            // The extended highest sequence number is the low 32 bits of the
            // 48-bit index (wrap count in the high 16).
            highest_sequence: self.highest as u32,
            jitter: self.jitter_x16 >> 4,
            last_sr: 0,
            delay_since_last_sr: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_sequence: 0x0001_0005,
            jitter: 77,
            last_sr: 0xdead_beef,
            delay_since_last_sr: 65_536,
        }
    }

    #[test]
    fn receiver_report_round_trips_inside_a_compound() {
        let mut buf = [0u8; 256];
        let len = write_receiver_report(0x3e9, &[block(1), block(2)], &mut buf).expect("room");
        assert_eq!(len, 8 + 2 * BLOCK_LEN);
        // Followed by an empty BYE (203) in the same compound.
        buf[len..len + 4].copy_from_slice(&[0x80, 203, 0, 0]);
        let mut packets = packets(&buf[..len + 4]);
        let rr = packets.next().expect("one").expect("valid");
        assert_eq!((rr.packet_type, rr.count), (RECEIVER_REPORT, 2));
        let report = ReceiverReport::parse(&rr).expect("an RR");
        assert_eq!(report.reporter, 0x3e9);
        assert_eq!(report.blocks().collect::<Vec<_>>(), [block(1), block(2)]);
        let bye = packets.next().expect("two").expect("valid");
        assert_eq!(bye.packet_type, 203);
        assert_eq!(ReceiverReport::parse(&bye), Err(Error::NotRtcp));
        assert!(packets.next().is_none());
    }

    #[test]
    fn cumulative_loss_is_clamped_to_24_bits() {
        let mut buf = [0u8; 64];
        for (given, read) in [(i32::MAX, 0x7f_ffff), (i32::MIN, -0x80_0000), (-1, -1)] {
            let len = write_receiver_report(
                1,
                &[ReportBlock {
                    cumulative_lost: given,
                    ..block(9)
                }],
                &mut buf,
            )
            .expect("room");
            let packet = packets(&buf[..len]).next().expect("one").expect("valid");
            let got = ReceiverReport::parse(&packet)
                .expect("RR")
                .blocks()
                .next()
                .expect("block");
            assert_eq!(got.cumulative_lost, read, "{given}");
        }
    }

    #[test]
    fn hostile_compounds_end_in_one_error() {
        // Length past the end; wrong version; padding longer than the body;
        // a count promising more blocks than present.
        for bad in [
            &[0x80, 201, 0, 9, 0, 0, 0, 1][..],
            &[0x40, 201, 0, 1, 0, 0, 0, 1][..],
            &[0xa0, 201, 0, 1, 0, 0, 0, 9][..],
            &[0x80, 201, 0][..],
        ] {
            let all: Vec<_> = packets(bad).collect();
            assert_eq!(all.len(), 1, "{bad:?}");
            assert!(all[0].is_err(), "{bad:?}");
        }
        let promising = [0x81, 201, 0, 1, 0, 0, 0, 1];
        let packet = packets(&promising)
            .next()
            .expect("one")
            .expect("header fine");
        assert_eq!(ReceiverReport::parse(&packet), Err(Error::Truncated));
        let mut buf = [0u8; 1024];
        assert_eq!(
            write_receiver_report(1, &[block(1); 32], &mut buf),
            Err(Error::Malformed)
        );
        assert_eq!(
            write_receiver_report(1, &[block(1)], &mut buf[..31]),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn reception_counts_loss_per_interval_and_in_total() {
        let mut reception = Reception::default();
        assert_eq!(reception.report(7), None);
        // 20 ms Opus at 48 kHz: 960 timestamp units a packet, arriving on
        // time. Indices 65,530..65,545 across a wrap, 4 of 16 lost.
        for i in 0..16u64 {
            if [3, 4, 9, 15].contains(&i) {
                continue;
            }
            let ts = (i as u32) * 960;
            reception.on_packet(65_530 + i, ts, ts + 5_000);
        }
        let first = reception.report(7).expect("packets came");
        // Index 65,544 is the highest received (65,545 was lost).
        assert_eq!(first.highest_sequence, 65_544);
        assert_eq!(first.cumulative_lost, 3);
        assert_eq!(first.fraction_lost, (3 * 256 / 15) as u8);
        assert_eq!(first.jitter, 0, "constant transit, no jitter");
        // Next interval: all 10 arrive, one 480 units late.
        for i in 16..26u64 {
            let ts = (i as u32) * 960;
            let late = if i == 20 { 480 } else { 0 };
            reception.on_packet(65_530 + i, ts, ts + 5_000 + late);
        }
        let second = reception.report(7).expect("packets came");
        assert_eq!(second.cumulative_lost, 4, "65,545 now counts as lost");
        assert_eq!(
            second.fraction_lost,
            (256 / 11) as u8,
            "1 of 11 expected since"
        );
        // Two jumps of 480 (late, then back): J = 480/16 then J += (480 - J)/16.
        assert!(
            second.jitter > 40 && second.jitter < 70,
            "jitter {}",
            second.jitter
        );
    }
}
