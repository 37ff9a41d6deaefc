//! The media plane's own test vector (docs/PROTOCOL.md, "Media plane: SRTP
//! (draft)"): from a fixed 56-byte exporter secret to the session keys and a
//! protected uplink RTP packet and RTCP receiver report, pinned byte for
//! byte, and checked to be the bytes the document prints.
//!
//! Print the values to paste into the document:
//! `cargo test -p ptt-codec --test srtp_vector -- --ignored --nocapture`.

use ptt_codec::srtp::{
    self, rtp, voice, Direction, MasterKeys, Receiver, Role, Sender, SharedSender, TAG_LEN,
};
use ptt_codec::{GroupId, VoiceHeader};

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// The exporter output of the vector: bytes 0x00, 0x01, ..., 0x37.
fn exported() -> [u8; srtp::EXPORTER_LEN] {
    core::array::from_fn(|i| i as u8)
}

/// Terminal 1001's SSRC in the vector.
const SSRC: u32 = 0x0000_03e9;

/// The plaintext RTP packet: marker, payload type 111 (Opus), sequence
/// 0x1234, timestamp 0x0001_e240, a 3-byte Opus packet.
fn rtp_plain() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let len = rtp::Builder {
        marker: true,
        payload_type: 111,
        sequence: 0x1234,
        timestamp: 0x0001_e240,
        ssrc: SSRC,
        csrcs: &[],
        extension: None,
    }
    .write(&[0xf8, 0xff, 0xfe], &mut buf)
    .expect("room");
    buf[..len].to_vec()
}

/// The plaintext RTCP receiver report (RFC 3550 §6.4.2) with no report
/// block: V=2, RC=0, PT=201, length 1, SSRC.
fn rtcp_plain() -> Vec<u8> {
    let mut packet = vec![0x80, 201, 0x00, 0x01];
    packet.extend_from_slice(&SSRC.to_be_bytes());
    packet
}

fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Vector {
    master_key: Vec<u8>,
    master_salt: Vec<u8>,
    rtp_key: Vec<u8>,
    rtp_salt: Vec<u8>,
    rtcp_key: Vec<u8>,
    rtcp_salt: Vec<u8>,
    srtp: Vec<u8>,
    srtcp: Vec<u8>,
}

fn compute() -> Vector {
    let keys = MasterKeys::from_exporter(&exported()).expect("56 bytes");
    let master = keys.master(Direction::Uplink).clone();
    let session = keys.session(Role::Client.sending());
    let mut sender = Sender::new(&session, SSRC);
    let plain = rtp_plain();
    let mut buf = [0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let len = sender.protect(&mut buf, plain.len()).expect("protect");
    let srtp = buf[..len].to_vec();
    let plain = rtcp_plain();
    buf[..plain.len()].copy_from_slice(&plain);
    let len = sender.protect_rtcp(&mut buf, plain.len()).expect("protect");
    let srtcp = buf[..len].to_vec();
    Vector {
        master_key: master.key.to_vec(),
        master_salt: master.salt.to_vec(),
        rtp_key: session.rtp.key.to_vec(),
        rtp_salt: session.rtp.salt.to_vec(),
        rtcp_key: session.rtcp.key.to_vec(),
        rtcp_salt: session.rtcp.salt.to_vec(),
        srtp,
        srtcp,
    }
}

/// The voice frames of the vector: terminal 1001 (SSRC 0x3e9) talks in
/// group 42, burst 5 (frame 0, RTP sequence 0x1235, timestamp 0); the
/// gateway relays frame 7 of terminal 1002's burst 5, with END, to it
/// (its downlink's packet 0x0100, timestamp 0x00002580).
fn voice_packets() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let keys = MasterKeys::from_exporter(&exported()).expect("56 bytes");
    let frame = VoiceHeader {
        group: GroupId(42),
        speaker: 0,
        burst: 5,
        seq: 0,
        flags: 0,
    };
    let mut buf = [0u8; 128];
    let rtp = voice::Rtp {
        ssrc: SSRC,
        sequence: 0x1235,
        timestamp: 0,
    };
    let len = voice::write(&frame, rtp, None, &[0xf8, 0xff, 0xfe], &mut buf).expect("room");
    let up_plain = buf[..len].to_vec();
    let mut terminal = Sender::new(&keys.session(Role::Client.sending()), SSRC);
    let len = terminal.protect(&mut buf, len).expect("protect");
    let up = buf[..len].to_vec();

    let gateway = SharedSender::new(&keys.session(Role::Server.sending()), SSRC, 0x0100);
    let index = gateway.next().expect("an index");
    let frame = VoiceHeader {
        speaker: 1002,
        seq: 7,
        flags: ptt_codec::voice::FLAG_END,
        ..frame
    };
    let rtp = voice::Rtp {
        ssrc: SSRC,
        sequence: SharedSender::sequence_of(index),
        timestamp: 0x0000_2580,
    };
    let len = voice::write(&frame, rtp, Some(1002), &[0xf8, 0xff, 0xfe], &mut buf).expect("room");
    let down_plain = buf[..len].to_vec();
    let len = gateway.seal(index, &mut buf, len).expect("seal");
    (up_plain, up, down_plain, buf[..len].to_vec())
}

#[test]
#[ignore = "prints the vector for docs/PROTOCOL.md"]
fn print_voice_vector() {
    let (up_plain, up, down_plain, down) = voice_packets();
    println!("uplink rtp      {}", spaced(&up_plain));
    println!("uplink srtp     {}", spaced(&up));
    println!("downlink rtp    {}", spaced(&down_plain));
    println!("downlink srtp   {}", spaced(&down));
}

#[test]
#[ignore = "prints the vector for docs/PROTOCOL.md"]
fn print_vector() {
    let v = compute();
    println!("exporter        {}", spaced(&exported()));
    println!("master key      {}", spaced(&v.master_key));
    println!("master salt     {}", spaced(&v.master_salt));
    println!("srtp key        {}", spaced(&v.rtp_key));
    println!("srtp salt       {}", spaced(&v.rtp_salt));
    println!("srtcp key       {}", spaced(&v.rtcp_key));
    println!("srtcp salt      {}", spaced(&v.rtcp_salt));
    println!("rtp             {}", spaced(&rtp_plain()));
    println!("srtp            {}", spaced(&v.srtp));
    println!("rtcp            {}", spaced(&rtcp_plain()));
    println!("srtcp           {}", spaced(&v.srtcp));
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("valid hex")
}

/// The pinned vector. Cross-checked once, independently of this crate, with
/// Python's `cryptography` (OpenSSL): AES-ECB for the RFC 3711 derivation,
/// AESGCM for the packets (see docs/notes/h-srtp.md).
const MASTER_KEY: &str = "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f";
const MASTER_SALT: &str = "20 21 22 23 24 25 26 27 28 29 2a 2b";
const SRTP_KEY: &str = "a9 f7 3b 69 bf 65 df ba a4 df c0 0d f1 3a 75 0a";
const SRTP_SALT: &str = "9c 70 5e 56 8f 5c be 80 23 58 35 05";
const SRTCP_KEY: &str = "66 23 9e a9 be 8a 57 97 98 f8 74 2b e8 32 82 c0";
const SRTCP_SALT: &str = "30 86 e7 11 58 e0 92 2d b7 49 10 57";
const RTP: &str = "80 ef 12 34 00 01 e2 40 00 00 03 e9 f8 ff fe";
const SRTP: &str =
    "80 ef 12 34 00 01 e2 40 00 00 03 e9 f2 c0 51 a0 5f ce 14 1c 70 f2 75 28 5c e4 d7 8d e0 43 f1";
const RTCP: &str = "80 c9 00 01 00 00 03 e9";
const SRTCP: &str =
    "80 c9 00 01 00 00 03 e9 e9 30 5e 9a 90 ff 89 b6 66 00 c7 49 ba f5 a5 49 80 00 00 00";

const VOICE_UP_RTP: &str =
    "90 ef 12 35 00 00 00 00 00 00 03 e9 be de 00 03 18 00 00 00 2a 00 05 00 00 00 00 00 f8 ff fe";
const VOICE_UP_SRTP: &str = "90 ef 12 35 00 00 00 00 00 00 03 e9 be de 00 03 18 00 00 00 2a 00 05 00 00 00 00 00 c9 8d 86 e5 52 54 d5 6d 3f 6d bf d3 7b dc 10 16 b5 9e 98";
const VOICE_DOWN_RTP: &str = "91 6f 01 00 00 00 25 80 00 00 03 e9 00 00 03 ea be de 00 03 18 00 00 00 2a 00 05 00 07 01 00 00 f8 ff fe";
const VOICE_DOWN_SRTP: &str = "91 6f 01 00 00 00 25 80 00 00 03 e9 00 00 03 ea be de 00 03 18 00 00 00 2a 00 05 00 07 01 00 00 00 6b c4 d8 d0 21 60 1d 33 c9 ef 32 79 fb 1d b3 71 12 1f";

#[test]
fn the_voice_vector_is_pinned_and_reads_back() {
    let (up_plain, up, down_plain, down) = voice_packets();
    assert_eq!(up_plain, unhex(VOICE_UP_RTP));
    assert_eq!(up, unhex(VOICE_UP_SRTP));
    assert_eq!(down_plain, unhex(VOICE_DOWN_RTP));
    assert_eq!(down, unhex(VOICE_DOWN_SRTP));
    let keys = MasterKeys::from_exporter(&exported()).expect("56 bytes");
    let mut terminal = Receiver::new(&keys.session(Role::Client.receiving()), SSRC);
    let mut packet = unhex(VOICE_DOWN_SRTP);
    let got = terminal.unprotect(&mut packet).expect("authentic");
    let (frame, opus) = voice::read(&got, &packet).expect("a voice packet");
    assert_eq!(
        (
            frame.group,
            frame.speaker,
            frame.burst,
            frame.seq,
            frame.flags
        ),
        (GroupId(42), 1002, 5, 7, ptt_codec::voice::FLAG_END)
    );
    assert_eq!(opus, [0xf8, 0xff, 0xfe]);
}

#[test]
fn the_vector_is_pinned() {
    let v = compute();
    assert_eq!(v.master_key, unhex(MASTER_KEY));
    assert_eq!(v.master_salt, unhex(MASTER_SALT));
    assert_eq!(v.rtp_key, unhex(SRTP_KEY));
    assert_eq!(v.rtp_salt, unhex(SRTP_SALT));
    assert_eq!(v.rtcp_key, unhex(SRTCP_KEY));
    assert_eq!(v.rtcp_salt, unhex(SRTCP_SALT));
    assert_eq!(rtp_plain(), unhex(RTP));
    assert_eq!(v.srtp, unhex(SRTP));
    assert_eq!(rtcp_plain(), unhex(RTCP));
    assert_eq!(v.srtcp, unhex(SRTCP));
}

#[test]
fn the_gateway_unprotects_the_vector() {
    let keys = MasterKeys::from_exporter(&exported()).expect("56 bytes");
    let mut gateway = Receiver::new(&keys.session(Role::Server.receiving()), SSRC);
    let mut packet = unhex(SRTP);
    let got = gateway.unprotect(&mut packet).expect("authentic");
    assert_eq!(packet[..packet.len() - TAG_LEN], unhex(RTP)[..]);
    assert_eq!(packet[got.payload], [0xf8, 0xff, 0xfe]);
    let mut report = unhex(SRTCP);
    let len = gateway.unprotect_rtcp(&mut report).expect("authentic");
    assert_eq!(report[..len], unhex(RTCP)[..]);
    // The downlink keys are other keys: the gateway's own packets under them
    // would not pass as the terminal's.
    let mut wrong = Receiver::new(&keys.session(Direction::Downlink), SSRC);
    assert_eq!(
        wrong.unprotect(&mut unhex(SRTP)),
        Err(srtp::Error::AuthFailed)
    );
}

#[test]
fn the_document_prints_this_vector() {
    let section = DOC
        .split("## 8. Media plane: SRTP")
        .nth(1)
        .expect("the media plane section in docs/PROTOCOL.md");
    let exporter = spaced(&exported());
    for (name, hex) in [
        ("exporter", exporter.as_str()),
        ("master key", MASTER_KEY),
        ("master salt", MASTER_SALT),
        ("SRTP key", SRTP_KEY),
        ("SRTP salt", SRTP_SALT),
        ("SRTCP key", SRTCP_KEY),
        ("SRTCP salt", SRTCP_SALT),
        ("RTP", RTP),
        ("SRTP", SRTP),
        ("RTCP", RTCP),
        ("SRTCP", SRTCP),
        ("uplink voice RTP", VOICE_UP_RTP),
        ("uplink voice SRTP", VOICE_UP_SRTP),
        ("downlink voice RTP", VOICE_DOWN_RTP),
        ("downlink voice SRTP", VOICE_DOWN_SRTP),
    ] {
        // The document may wrap long hex over lines; compare without spacing.
        let flat: String = section.split_whitespace().collect();
        assert!(
            flat.contains(&hex.replace(' ', "")),
            "docs/PROTOCOL.md lacks the {name} bytes {hex}"
        );
    }
    assert!(section.contains(std::str::from_utf8(srtp::EXPORTER_LABEL).expect("ASCII")));
}
