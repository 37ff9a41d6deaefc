//! Target for the media plane's receive path (docs/PROTOCOL.md section 8):
//! what the gateway does with a datagram on its shared port, in order:
//! `srtp::divert` (QUIC or media, GRO segments), `srtp::is_rtcp`, the
//! receiver (`unprotect`, `unprotect_rtcp`) and `srtp::voice::read`.
//!
//! Properties, for every input:
//! - nothing panics; `divert` keeps only QUIC datagrams, within the buffer;
//! - a packet the keys did not seal never authenticates: inputs are a
//!   valid uplink voice packet (sealed with the target's fixed keys) with
//!   mutations; one that differs from the sealed bytes in any byte must be
//!   refused, and the sealed one accepted exactly once (a replay is
//!   `Replayed`);
//! - an accepted packet reads back as the frame that was sealed.

use ptt_codec::srtp::{self, voice, Datagram, MasterKeys, Receiver, Role, Sender};
use ptt_codec::{GroupId, VoiceHeader};

use crate::input::{mutate, Rng, Source};
use crate::Outcome;

/// The target's SSRC.
const SSRC: u32 = 0x5eed_0001;

fn keys() -> MasterKeys {
    MasterKeys::from_exporter(&[0x42; srtp::EXPORTER_LEN]).expect("56 bytes")
}

/// The frame sealed from the first input bytes.
fn frame(s: &mut Source<'_>) -> (VoiceHeader, Vec<u8>, u16) {
    let header = VoiceHeader {
        group: GroupId(s.u32().max(1)),
        speaker: 0,
        burst: s.u16(),
        seq: s.u16(),
        flags: s.u8() & ptt_codec::voice::FLAG_END,
    };
    let n = 1 + s.below(64);
    let opus = (0..n).map(|_| s.u8()).collect();
    (header, opus, s.u16() & 0x7fff)
}

/// The sealed packet for the seed bytes.
fn sealed(seed: &[u8]) -> Vec<u8> {
    let (header, opus, sequence) = frame(&mut Source::new(seed));
    let mut sender = Sender::new(&keys().session(Role::Client.sending()), SSRC);
    let mut buf = [0u8; voice::MAX_PACKET + srtp::TAG_LEN];
    let rtp = voice::Rtp {
        ssrc: SSRC,
        sequence,
        timestamp: u32::from(sequence) * voice::TICKS_PER_FRAME,
    };
    let len = voice::write(&header, rtp, None, &opus, &mut buf).expect("room");
    let len = sender.protect(&mut buf, len).expect("fresh sender");
    buf[..len].to_vec()
}

/// Generator: 16 seed bytes, then a sealed packet of that seed, mutated or
/// not, sometimes several times over as one GRO buffer.
pub fn gen_media(rng: &mut Rng) -> Vec<u8> {
    let seed = rng.bytes(16);
    let mut packet = sealed(&seed);
    if rng.chance(1, 2) {
        mutate(rng, &mut packet, 2);
    }
    let mut out = seed;
    out.extend_from_slice(&packet);
    out
}

/// Check of the `media` target.
pub fn check_media(input: &[u8]) -> Result<Outcome, String> {
    if input.len() < 16 {
        return Ok("short");
    }
    let (seed, packet) = input.split_at(16);
    let expected = sealed(seed);

    // The port's split: one buffer of this packet twice, GRO-style.
    let mut gro = [packet, packet].concat();
    let len = gro.len();
    let mut media = 0;
    let kept = srtp::divert(&mut gro, len, packet.len(), |_| media += 1);
    if kept > len {
        return Err(format!("divert kept {kept} of {len} bytes"));
    }
    let want = match srtp::demux(packet) {
        Datagram::Quic => (len, 0),
        Datagram::Media => (0, 2),
        Datagram::Other => (0, 0),
    };
    if (kept, media) != want {
        return Err(format!(
            "divert kept {kept} bytes and took {media}, not {want:?}"
        ));
    }

    let (header, opus, _) = frame(&mut Source::new(seed));
    let mut receiver = Receiver::new(&keys().session(Role::Server.receiving()), SSRC);
    let mut buf = packet.to_vec();
    let outcome = if srtp::is_rtcp(&buf) {
        if receiver.unprotect_rtcp(&mut buf).is_ok() {
            return Err("a mutated voice packet authenticated as RTCP".into());
        }
        "rtcp refused"
    } else {
        match receiver.unprotect(&mut buf) {
            Ok(got) => {
                if packet != expected.as_slice() {
                    return Err("a packet other than the sealed one authenticated".into());
                }
                let (h, o) = voice::read(&got, &buf).map_err(|e| format!("read: {e}"))?;
                if h != header || o != opus.as_slice() {
                    return Err(format!("read back {h:?}, not {header:?}"));
                }
                let mut again = packet.to_vec();
                if receiver.unprotect(&mut again) != Err(srtp::Error::Replayed) {
                    return Err("a replay was not refused".into());
                }
                "authentic"
            }
            Err(_) if packet == expected.as_slice() => {
                return Err("the sealed packet was refused".into());
            }
            Err(_) => "refused",
        }
    };
    Ok(outcome)
}
