//! Mumble's UDP packet protection (`CryptStateOCB2::encrypt`/`decrypt`):
//! a 4-byte header (the low byte of the 16-byte nonce and the first three
//! bytes of the OCB2 tag) before the ciphertext. Each side counts its
//! nonce up by one per packet; the receiver recovers the full nonce from
//! the low byte, accepting packets up to 30 late, resynchronising across
//! losses, and refusing replays with a history of the second nonce byte
//! per first byte.

use super::ocb2::{Ocb2, BLOCK};

/// Header bytes before the ciphertext.
pub const HEADER: usize = 4;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the 4-byte header.
    #[error("packet shorter than its 4-byte header")]
    Short,
    /// A nonce already used, or one too far out of order to place.
    #[error("replayed or unplaceable nonce")]
    Replay,
    /// The tag does not match: wrong key, tampered or forged.
    #[error("authentication failed")]
    Tag,
}

/// The sending half: the key and the nonce this side counts up. Create
/// from CryptSetup (`client_nonce` is the client's encrypt nonce).
#[derive(Debug, Clone)]
pub struct Encrypt {
    key: Ocb2,
    iv: [u8; BLOCK],
}

/// The receiving half: the key, the last nonce seen, the replay history
/// and the statistics Mumble reports in its pings.
#[derive(Debug, Clone)]
pub struct Decrypt {
    key: Ocb2,
    iv: [u8; BLOCK],
    history: [u8; 256],
    /// Packets accepted.
    pub good: u32,
    /// Packets that arrived after a later one.
    pub late: u32,
    /// Packets skipped by the nonce (lost, or still to come late).
    pub lost: u32,
}

/// Both halves from CryptSetup's key and nonces, as the Mumble client
/// sets them: it encrypts with `client_nonce` and decrypts with
/// `server_nonce`.
pub fn from_setup(
    key: &[u8; BLOCK],
    client_nonce: &[u8; BLOCK],
    server_nonce: &[u8; BLOCK],
) -> (Encrypt, Decrypt) {
    let key = Ocb2::new(key);
    (
        Encrypt {
            key: key.clone(),
            iv: *client_nonce,
        },
        Decrypt {
            key,
            iv: *server_nonce,
            history: [0; 256],
            good: 0,
            late: 0,
            lost: 0,
        },
    )
}

/// Little-endian increment of the nonce from byte `from` on.
fn increment(iv: &mut [u8; BLOCK], from: usize) {
    for b in &mut iv[from..] {
        *b = b.wrapping_add(1);
        if *b != 0 {
            break;
        }
    }
}

fn decrement(iv: &mut [u8; BLOCK], from: usize) {
    for b in &mut iv[from..] {
        let was = *b;
        *b = b.wrapping_sub(1);
        if was != 0 {
            break;
        }
    }
}

impl Encrypt {
    /// Protects one packet: call once per datagram sent, in sending order.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        increment(&mut self.iv, 0);
        out.clear();
        out.extend_from_slice(&[self.iv[0], 0, 0, 0]);
        let tag = self.key.encrypt(plain, &self.iv, out);
        out[1..HEADER].copy_from_slice(&tag[..3]);
    }
}

impl Decrypt {
    /// Checks and decrypts one received datagram into `out`. On refusal
    /// the state is as before the call.
    pub fn open(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if packet.len() < HEADER {
            return Err(Error::Short);
        }
        let saved = self.iv;
        let ivbyte = packet[0];
        let mut restore = false;
        let (mut late, mut lost) = (0i64, 0i64);
        if self.iv[0].wrapping_add(1) == ivbyte {
            // In order.
            if ivbyte < self.iv[0] {
                increment(&mut self.iv, 1);
            }
            self.iv[0] = ivbyte;
        } else {
            let mut diff = i32::from(ivbyte) - i32::from(self.iv[0]);
            if diff > 128 {
                diff -= 256;
            } else if diff < -128 {
                diff += 256;
            }
            if ivbyte < self.iv[0] && diff > -30 && diff < 0 {
                // Late, no wrap.
                late = 1;
                lost = -1;
                self.iv[0] = ivbyte;
                restore = true;
            } else if ivbyte > self.iv[0] && diff > -30 && diff < 0 {
                // Late, from before the last wrap.
                late = 1;
                lost = -1;
                self.iv[0] = ivbyte;
                decrement(&mut self.iv, 1);
                restore = true;
            } else if ivbyte > self.iv[0] && diff > 0 {
                // Some lost.
                lost = i64::from(ivbyte - self.iv[0]) - 1;
                self.iv[0] = ivbyte;
            } else if ivbyte < self.iv[0] && diff > 0 {
                // Some lost across a wrap.
                lost = 256 - i64::from(self.iv[0]) + i64::from(ivbyte) - 1;
                self.iv[0] = ivbyte;
                increment(&mut self.iv, 1);
            } else {
                return Err(Error::Replay);
            }
            if self.history[usize::from(self.iv[0])] == self.iv[1] {
                self.iv = saved;
                return Err(Error::Replay);
            }
        }
        let start = out.len();
        let tag = self.key.decrypt(&packet[HEADER..], &self.iv, out);
        if tag.is_none_or(|t| t[..3] != packet[1..HEADER]) {
            out.truncate(start);
            self.iv = saved;
            return Err(Error::Tag);
        }
        self.history[usize::from(self.iv[0])] = self.iv[1];
        if restore {
            self.iv = saved;
        }
        self.good = self.good.wrapping_add(1);
        self.late = (i64::from(self.late) + late).max(0) as u32;
        self.lost = (i64::from(self.lost) + lost).max(0) as u32;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(iv: u8) -> (Encrypt, Decrypt) {
        let key = [7u8; BLOCK];
        let nonce = [iv; BLOCK];
        let (enc, _) = from_setup(&key, &nonce, &[0; BLOCK]);
        let (_, dec) = from_setup(&key, &[0; BLOCK], &nonce);
        (enc, dec)
    }

    fn sealed(enc: &mut Encrypt, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut out = Vec::new();
                enc.seal(b"abcdefghi\0", &mut out);
                out
            })
            .collect()
    }

    /// Mumble's `TestCrypt::ivrecovery`: decrypts, refuses the same nonce
    /// again, recovers after losses and across the low byte's wraps.
    #[test]
    fn recovers_from_loss_and_wraps() {
        let (mut enc, mut dec) = pair(0x55);
        let mut out = Vec::new();
        let p = sealed(&mut enc, 1).remove(0);
        dec.open(&p, &mut out).expect("in order");
        assert_eq!(out, b"abcdefghi\0");
        assert_eq!(dec.open(&p, &mut Vec::new()), Err(Error::Replay));
        let p = sealed(&mut enc, 16).pop().expect("16");
        dec.open(&p, &mut Vec::new()).expect("after 15 lost");
        for _ in 0..128 {
            dec.lost = 0;
            let p = sealed(&mut enc, 15).pop().expect("15");
            dec.open(&p, &mut Vec::new()).expect("after 14 lost");
            assert_eq!(dec.lost, 14);
        }
        assert_eq!(enc.iv, dec.iv);
        let p = sealed(&mut enc, 257).pop().expect("257");
        assert!(dec.open(&p, &mut Vec::new()).is_err(), "too far to place");
    }

    /// Mumble's `TestCrypt::reverserecovery`: up to 30 late packets are
    /// taken, not beyond, and none twice; then 512 in order, none twice.
    #[test]
    fn late_window_and_replays() {
        let (mut enc, mut dec) = pair(0x55);
        let p = sealed(&mut enc, 128);
        for (i, pkt) in p.iter().rev().enumerate() {
            let r = dec.open(pkt, &mut Vec::new());
            assert_eq!(r.is_ok(), i < 30, "packet {i} from the end");
        }
        for pkt in p.iter().rev().take(30) {
            assert!(dec.open(pkt, &mut Vec::new()).is_err());
        }
        let p = sealed(&mut enc, 512);
        for pkt in &p {
            dec.open(pkt, &mut Vec::new()).expect("in order");
        }
        for pkt in &p {
            assert!(dec.open(pkt, &mut Vec::new()).is_err());
        }
    }

    /// Mumble's `TestCrypt::tamper`: every single bit flip is refused, the
    /// untouched packet then still opens.
    #[test]
    fn every_bit_flip_refused() {
        let (mut enc, mut dec) = pair(0x10);
        let mut p = Vec::new();
        enc.seal(b"It was a funky funky town!\0", &mut p);
        for i in 0..p.len() * 8 {
            p[i / 8] ^= 1 << (i % 8);
            assert!(dec.open(&p, &mut Vec::new()).is_err(), "bit {i}");
            p[i / 8] ^= 1 << (i % 8);
        }
        let mut out = Vec::new();
        dec.open(&p, &mut out).expect("untouched");
        assert_eq!(out, b"It was a funky funky town!\0");
    }

    #[test]
    fn hostile_short_and_garbage() {
        let (_, mut dec) = pair(0);
        for len in 0..HEADER {
            assert_eq!(
                dec.open(&vec![0xff; len], &mut Vec::new()),
                Err(Error::Short)
            );
        }
        let mut out = Vec::new();
        for b in 0..=255u8 {
            assert!(dec.open(&[b; 40], &mut out).is_err());
            assert!(out.is_empty(), "nothing written on refusal");
        }
    }
}
