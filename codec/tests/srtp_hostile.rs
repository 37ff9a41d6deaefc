//! The media plane against hostile and unlucky input: arbitrary bytes,
//! truncation, wrong keys, flipped bits, replays, packets far outside the
//! window, sequence wrap, reordering. Nothing may panic; nothing forged,
//! replayed or stale may be accepted; nothing genuine may be lost.

use proptest::prelude::*;
use ptt_codec::srtp::{
    self, rtcp, rtp, Direction, Error, MasterKeys, Receiver, Role, Sender, SessionKeys, TAG_LEN,
};

const SSRC: u32 = 0x0bad_cafe;

fn keys(seed: u8) -> SessionKeys {
    let exported: [u8; srtp::EXPORTER_LEN] = core::array::from_fn(|i| seed ^ (i as u8));
    MasterKeys::from_exporter(&exported)
        .expect("56 bytes")
        .session(Role::Client.sending())
}

/// A protected uplink packet with sequence `seq` and `payload`.
fn protected(sender: &mut Sender, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 12 + payload.len() + TAG_LEN];
    let len = rtp::Builder {
        marker: false,
        payload_type: 111,
        sequence: seq,
        timestamp: u32::from(seq) * 960,
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(payload, &mut buf)
    .expect("room");
    let len = sender.protect(&mut buf, len).expect("protect");
    buf.truncate(len);
    buf
}

/// A sender and receiver pair, and `count` packets from sequence `first`.
fn stream(first: u16, count: usize) -> (Receiver, Vec<Vec<u8>>) {
    let mut sender = Sender::new(&keys(1), SSRC);
    let packets = (0..count)
        .map(|i| {
            let seq = first.wrapping_add(i as u16);
            protected(&mut sender, seq, &[i as u8; 80])
        })
        .collect();
    (Receiver::new(&keys(1), SSRC), packets)
}

#[test]
fn wrap_from_65535_to_0_bumps_the_rollover_counter() {
    let (mut receiver, packets) = stream(65_530, 12);
    for (i, packet) in packets.iter().enumerate() {
        let got = receiver.unprotect(&mut packet.clone()).expect("in order");
        assert_eq!(got.index, 65_530 + i as u64);
    }
    assert_eq!(receiver.roc(), 1);
    // A late packet from before the wrap still has ROC 0, and is refused
    // only as a replay.
    assert_eq!(
        receiver.unprotect(&mut packets[2].clone()),
        Err(Error::Replayed)
    );
}

#[test]
fn a_late_packet_from_before_the_wrap_is_accepted_once() {
    let (mut receiver, packets) = stream(65_534, 4);
    // 65534, 0, 1 arrive, then 65535 late.
    for i in [0, 2, 3, 1] {
        let got = receiver
            .unprotect(&mut packets[i].clone())
            .expect("first time");
        assert_eq!(got.index, 65_534 + i as u64);
    }
    assert_eq!(
        receiver.unprotect(&mut packets[1].clone()),
        Err(Error::Replayed)
    );
}

/// Why senders must start below sequence 32,768: a stream started at 65,500
/// whose first packets after the wrap overtake every packet before it gives
/// the receiver ROC 0 for a packet sent with ROC 1. That packet fails
/// authentication (it is not accepted under a wrong index) and the stream
/// recovers as soon as a packet from before the wrap arrives.
#[test]
fn a_first_packet_from_after_an_unseen_wrap_is_lost_then_the_stream_recovers() {
    let (mut receiver, packets) = stream(65_500, 45);
    // Index 65,536 + 4 (sequence 4) arrives first.
    assert_eq!(
        receiver.unprotect(&mut packets[40].clone()),
        Err(Error::AuthFailed)
    );
    for i in [0usize, 1, 39, 38, 40] {
        let got = receiver
            .unprotect(&mut packets[i].clone())
            .expect("in step");
        assert_eq!(got.index, 65_500 + i as u64);
    }
}

#[test]
fn a_packet_far_behind_the_window_is_too_old() {
    let (mut receiver, packets) = stream(100, 300);
    receiver
        .unprotect(&mut packets[299].clone())
        .expect("newest");
    for old in [0, 100, 299 - 128] {
        assert_eq!(
            receiver.unprotect(&mut packets[old].clone()),
            Err(Error::TooOld)
        );
    }
    // 127 behind is inside the window.
    receiver
        .unprotect(&mut packets[299 - 127].clone())
        .expect("inside the window");
}

#[test]
fn a_packet_from_before_the_first_is_too_old() {
    let (mut receiver, packets) = stream(65_535 - 2, 2);
    let mut sender = Sender::new(&keys(1), SSRC);
    let first = protected(&mut sender, 10, &[1; 80]);
    receiver.unprotect(&mut first.clone()).expect("first");
    // Sequence 65533 right after a first packet of 10 means ROC -1.
    assert_eq!(
        receiver.unprotect(&mut packets[0].clone()),
        Err(Error::TooOld)
    );
}

#[test]
fn the_sender_never_reuses_an_index() {
    let mut sender = Sender::new(&keys(1), SSRC);
    protected(&mut sender, 7, &[0; 80]);
    let mut buf = [0u8; 128];
    let len = rtp::Builder {
        marker: false,
        payload_type: 111,
        sequence: 7,
        timestamp: 0,
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(&[0; 80], &mut buf)
    .expect("room");
    let before = buf;
    assert_eq!(sender.protect(&mut buf, len), Err(Error::IndexReused));
    assert_eq!(buf, before, "a refused packet is left as it was");
    // Another stream's packet, or one without room for the tag, neither.
    let mut other = buf;
    other[8..12].copy_from_slice(&1u32.to_be_bytes());
    assert_eq!(sender.protect(&mut other, len), Err(Error::WrongSsrc));
    assert_eq!(
        sender.protect(&mut buf[..len + 15], len),
        Err(Error::BufferTooSmall)
    );
    assert_eq!(
        sender.protect(&mut buf[..len - 1], len),
        Err(Error::BufferTooSmall)
    );
}

#[test]
fn the_other_direction_and_another_session_fail_authentication() {
    let exported = [9u8; srtp::EXPORTER_LEN];
    let mut ours = exported;
    ours[0] ^= 1; // another session's exporter output
    let session = MasterKeys::from_exporter(&exported).expect("56 bytes");
    let mut sender = Sender::new(&session.session(Direction::Uplink), SSRC);
    let packet = protected(&mut sender, 1, &[3; 80]);
    let other = MasterKeys::from_exporter(&ours).expect("56 bytes");
    for keys in [other.session(Direction::Uplink), keys(2)] {
        let mut receiver = Receiver::new(&keys, SSRC);
        let mut copy = packet.clone();
        assert_eq!(receiver.unprotect(&mut copy), Err(Error::AuthFailed));
        assert_eq!(copy, packet, "left as it came");
    }
}

#[test]
fn padding_is_checked_after_authentication() {
    let mut sender = Sender::new(&keys(1), SSRC);
    let mut receiver = Receiver::new(&keys(1), SSRC);
    // P bit with 3 bytes of padding (count included).
    let mut buf = [0u8; 64];
    let len = rtp::Builder {
        marker: false,
        payload_type: 111,
        sequence: 1,
        timestamp: 0,
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(&[0xaa, 0xbb, 0, 0, 3], &mut buf)
    .expect("room");
    buf[0] |= 0x20;
    let len = sender.protect(&mut buf, len).expect("protect");
    let got = receiver.unprotect(&mut buf[..len]).expect("authentic");
    assert_eq!(buf[got.payload], [0xaa, 0xbb]);
    // A padding count longer than the payload is refused and not accepted.
    let mut buf = [0u8; 64];
    let len = rtp::Builder {
        marker: false,
        payload_type: 111,
        sequence: 2,
        timestamp: 0,
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(&[0xaa, 9], &mut buf)
    .expect("room");
    buf[0] |= 0x20;
    let len = sender.protect(&mut buf, len).expect("protect");
    let wire = buf;
    assert_eq!(receiver.unprotect(&mut buf[..len]), Err(Error::BadPadding));
    let mut again = wire;
    assert_eq!(
        receiver.unprotect(&mut again[..len]),
        Err(Error::BadPadding)
    );
}

#[test]
fn a_receiver_report_travels_in_srtcp() {
    let mut sender = Sender::new(&keys(1), SSRC);
    let mut receiver = Receiver::new(&keys(1), SSRC);
    let mut reception = rtcp::Reception::default();
    for seq in [1u64, 2, 4] {
        reception.on_packet(seq, seq as u32 * 960, seq as u32 * 960);
    }
    let block = reception.report(0x0000_0001).expect("packets came");
    let mut buf = [0u8; 128];
    let len = rtcp::write_receiver_report(SSRC, &[block], &mut buf).expect("room");
    let len = sender.protect_rtcp(&mut buf, len).expect("protect");
    assert!(srtp::is_rtcp(&buf[..len]));
    let len = receiver.unprotect_rtcp(&mut buf[..len]).expect("authentic");
    let packet = rtcp::packets(&buf[..len])
        .next()
        .expect("one")
        .expect("valid");
    let report = rtcp::ReceiverReport::parse(&packet).expect("an RR");
    assert_eq!(report.reporter, SSRC);
    let got: Vec<_> = report.blocks().collect();
    assert_eq!(got, [block]);
    assert_eq!((got[0].cumulative_lost, got[0].highest_sequence), (1, 4));
}

#[test]
fn srtcp_refuses_truncation_forgery_and_replay() {
    let mut sender = Sender::new(&keys(1), SSRC);
    let mut receiver = Receiver::new(&keys(1), SSRC);
    let mut report = vec![0x80, 201, 0, 1];
    report.extend_from_slice(&SSRC.to_be_bytes());
    let mut buf = [0u8; 64];
    buf[..8].copy_from_slice(&report);
    let len = sender.protect_rtcp(&mut buf, 8).expect("protect");
    let wire = buf[..len].to_vec();
    for cut in 0..len {
        let refused = receiver.unprotect_rtcp(&mut wire[..cut].to_vec());
        assert!(refused.is_err(), "cut at {cut} accepted");
    }
    for bit in 0..len * 8 {
        let mut forged = wire.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        assert!(receiver.unprotect_rtcp(&mut forged).is_err(), "bit {bit}");
    }
    let plain = receiver.unprotect_rtcp(&mut wire.clone()).expect("genuine");
    assert_eq!(plain, 8);
    assert_eq!(
        receiver.unprotect_rtcp(&mut wire.clone()),
        Err(Error::Replayed)
    );
    // An RTP packet handed to the RTCP path is not RTCP.
    let rtp = protected(&mut sender, 1, &[0; 80]);
    assert_eq!(
        receiver.unprotect_rtcp(&mut rtp.clone()),
        Err(Error::NotRtcp)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Arbitrary bytes: no panic, and nothing is ever accepted (a forgery
    /// would need the tag: 2^-128).
    #[test]
    fn arbitrary_bytes_never_panic_nor_pass(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut receiver = Receiver::new(&keys(1), SSRC);
        prop_assert!(receiver.unprotect(&mut bytes.clone()).is_err());
        prop_assert!(receiver.unprotect_rtcp(&mut bytes).is_err());
        let _ = rtp::Header::parse(&bytes);
        let _ = srtp::demux(&bytes);
        let _ = srtp::is_rtcp(&bytes);
        for element in rtp::elements(rtp::ONE_BYTE_PROFILE, &bytes).chain(rtp::elements(0x1000, &bytes)) {
            let _ = element;
        }
        // The RTCP compound parser ends after at most one error.
        let mut errors = 0;
        for packet in rtcp::packets(&bytes) {
            match packet {
                Ok(packet) => {
                    if let Ok(report) = rtcp::ReceiverReport::parse(&packet) {
                        prop_assert!(report.blocks().count() <= rtcp::MAX_BLOCKS);
                    }
                }
                Err(_) => errors += 1,
            }
        }
        prop_assert!(errors <= 1);
    }

    /// Arbitrary bytes with our SSRC and a plausible header, so they reach
    /// the AEAD: refused as forgeries, the receiver unchanged after.
    #[test]
    fn forged_packets_with_our_ssrc_fail_and_change_nothing(
        seq in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 16..120),
    ) {
        let (mut receiver, packets) = stream(seq.wrapping_add(1), 1);
        let mut forged = vec![0x80, 111];
        forged.extend_from_slice(&seq.wrapping_add(1).to_be_bytes());
        forged.extend_from_slice(&[0; 4]);
        forged.extend_from_slice(&SSRC.to_be_bytes());
        forged.extend_from_slice(&body);
        prop_assert_eq!(receiver.unprotect(&mut forged), Err(Error::AuthFailed));
        // The genuine packet with that very index still gets through.
        prop_assert!(receiver.unprotect(&mut packets[0].clone()).is_ok());
    }

    /// Any truncation of a genuine packet is refused; the genuine packet is
    /// accepted after.
    #[test]
    fn truncated_packets_are_refused(cut in 0usize..(12 + 80 + TAG_LEN)) {
        let (mut receiver, packets) = stream(500, 1);
        let mut short = packets[0][..cut].to_vec();
        prop_assert!(receiver.unprotect(&mut short).is_err());
        prop_assert!(receiver.unprotect(&mut packets[0].clone()).is_ok());
    }

    /// Any single flipped bit makes the packet fail, and the genuine one
    /// still passes after.
    #[test]
    fn flipped_bits_fail(bit in 0usize..((12 + 80 + TAG_LEN) * 8)) {
        let (mut receiver, packets) = stream(7, 1);
        let mut forged = packets[0].clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(receiver.unprotect(&mut forged).is_err());
        prop_assert!(receiver.unprotect(&mut packets[0].clone()).is_ok());
    }

}

proptest! {
    // Each case runs a whole stream (100 packets, or up to 40 gaps): fewer
    // cases keep the debug-build run short.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Reordering within the window: every packet accepted exactly once, in
    /// any order, with its right index, across a sequence wrap; a second
    /// copy of each is a replay.
    ///
    /// The first sequence number is below 32,768, as the media plane
    /// requires of senders (docs/PROTOCOL.md): a receiver has nothing but
    /// the first packet it gets to set its rollover counter from.
    #[test]
    fn reordered_packets_are_accepted_once_each(
        first in 0u16..0x8000,
        order in Just((0..100usize).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let (mut receiver, packets) = stream(first, 100);
        // Shuffled with at most 100 packets: always within 128 of the newest.
        for &i in &order {
            let got = receiver.unprotect(&mut packets[i].clone());
            prop_assert_eq!(got.map(|p| p.index), Ok(u64::from(first) + i as u64));
        }
        for &i in &order {
            prop_assert_eq!(receiver.unprotect(&mut packets[i].clone()), Err(Error::Replayed));
        }
    }

    /// Loss never desynchronises the rollover counter: any sequence of gaps
    /// under 32,768 keeps every later packet decryptable, across many wraps.
    #[test]
    fn gaps_keep_the_rollover_counter_in_step(
        first in any::<u16>(),
        gaps in proptest::collection::vec(1u16..30_000, 1..40),
    ) {
        let mut sender = Sender::new(&keys(3), SSRC);
        let mut receiver = Receiver::new(&keys(3), SSRC);
        let mut seq = first;
        let mut index = u64::from(first);
        let packet = protected(&mut sender, seq, &[0; 20]);
        prop_assert_eq!(receiver.unprotect(&mut packet.clone()).map(|p| p.index), Ok(index));
        for gap in gaps {
            seq = seq.wrapping_add(gap);
            index += u64::from(gap);
            let packet = protected(&mut sender, seq, &[1; 20]);
            prop_assert_eq!(receiver.unprotect(&mut packet.clone()).map(|p| p.index), Ok(index));
        }
        prop_assert_eq!(u64::from(receiver.roc()), index >> 16);
        prop_assert_eq!(u64::from(sender.roc()), index >> 16);
    }
}
