//! OCB2-AES128, the authenticated encryption Mumble's UDP voice uses
//! (Mumble's `CryptStateOCB2::ocb_encrypt`/`ocb_decrypt`), over the `aes`
//! crate's block cipher. The mode is written out here because no
//! maintained crate offers OCB2 (OCB3, RFC 7253, is a different mode).
//!
//! Mumble's two counter-measures against the XEX* attack on OCB2
//! (<https://eprint.iacr.org/2019/311>, section 9) are kept, since a
//! server running current Mumble code refuses packets without them: the
//! encryptor flips a bit of a penultimate block that would be exploitable,
//! and the decryptor refuses a last block that equals the attack's
//! pattern.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

/// AES block and key size, bytes.
pub const BLOCK: usize = 16;

type Block = [u8; BLOCK];

/// An OCB2-AES128 key: create once per CryptSetup key, then encrypt and
/// decrypt with per-packet nonces.
#[derive(Clone)]
pub struct Ocb2 {
    aes: Aes128,
}

impl std::fmt::Debug for Ocb2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ocb2(..)")
    }
}

/// Multiplication by x in GF(2^128), big endian (Mumble's `S2`).
fn times2(b: &mut Block) {
    let carry = b[0] >> 7;
    for i in 0..BLOCK - 1 {
        b[i] = (b[i] << 1) | (b[i + 1] >> 7);
    }
    b[BLOCK - 1] = (b[BLOCK - 1] << 1) ^ (carry * 0x87);
}

/// Multiplication by x + 1 (Mumble's `S3`).
fn times3(b: &mut Block) {
    let mut doubled = *b;
    times2(&mut doubled);
    xor_in(b, &doubled);
}

fn xor_in(dst: &mut Block, src: &Block) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// The last block's length block: the bit length, big endian, in the last
/// bytes of a zero block.
fn length_block(len: usize) -> Block {
    let mut b = [0u8; BLOCK];
    b[8..].copy_from_slice(&((len as u64) * 8).to_be_bytes());
    b
}

impl Ocb2 {
    /// A key from CryptSetup's 16 key bytes.
    pub fn new(key: &[u8; BLOCK]) -> Ocb2 {
        Ocb2 {
            aes: Aes128::new(GenericArray::from_slice(key)),
        }
    }

    fn enc(&self, b: &mut Block) {
        self.aes.encrypt_block(GenericArray::from_mut_slice(b));
    }

    fn dec(&self, b: &mut Block) {
        self.aes.decrypt_block(GenericArray::from_mut_slice(b));
    }

    /// Encrypts `plain` under `nonce`, appending the ciphertext (same
    /// length) to `out`; returns the 16-byte tag. As Mumble's encryptor, a
    /// penultimate block open to the XEX* attack (all zero but its last
    /// byte) has one bit flipped first, which Opus tolerates.
    pub fn encrypt(&self, plain: &[u8], nonce: &Block, out: &mut Vec<u8>) -> Block {
        let mut delta = *nonce;
        self.enc(&mut delta);
        let mut checksum = [0u8; BLOCK];
        let mut rest = plain;
        while rest.len() > BLOCK {
            let (block, tail) = rest.split_at(BLOCK);
            let mut p: Block = block.try_into().expect("split_at(BLOCK) gives BLOCK bytes");
            if tail.len() <= BLOCK && p[..BLOCK - 1].iter().all(|b| *b == 0) {
                p[0] ^= 1;
            }
            times2(&mut delta);
            let mut tmp = p;
            xor_in(&mut tmp, &delta);
            self.enc(&mut tmp);
            xor_in(&mut tmp, &delta);
            out.extend_from_slice(&tmp);
            xor_in(&mut checksum, &p);
            rest = tail;
        }
        times2(&mut delta);
        let mut pad = length_block(rest.len());
        xor_in(&mut pad, &delta);
        self.enc(&mut pad);
        let mut tmp = pad;
        tmp[..rest.len()].copy_from_slice(rest);
        xor_in(&mut checksum, &tmp);
        xor_in(&mut tmp, &pad);
        out.extend_from_slice(&tmp[..rest.len()]);
        times3(&mut delta);
        xor_in(&mut checksum, &delta);
        self.enc(&mut checksum);
        checksum
    }

    /// Decrypts `cipher` under `nonce`, appending the plaintext to `out`;
    /// returns the tag to compare with the packet's, or `None` if the last
    /// block has the XEX* attack's shape (refuse the packet).
    pub fn decrypt(&self, cipher: &[u8], nonce: &Block, out: &mut Vec<u8>) -> Option<Block> {
        let mut delta = *nonce;
        self.enc(&mut delta);
        let mut checksum = [0u8; BLOCK];
        let mut rest = cipher;
        while rest.len() > BLOCK {
            let (block, tail) = rest.split_at(BLOCK);
            let mut tmp: Block = block.try_into().expect("split_at(BLOCK) gives BLOCK bytes");
            times2(&mut delta);
            xor_in(&mut tmp, &delta);
            self.dec(&mut tmp);
            xor_in(&mut tmp, &delta);
            out.extend_from_slice(&tmp);
            xor_in(&mut checksum, &tmp);
            rest = tail;
        }
        times2(&mut delta);
        let mut pad = length_block(rest.len());
        xor_in(&mut pad, &delta);
        self.enc(&mut pad);
        let mut tmp = [0u8; BLOCK];
        tmp[..rest.len()].copy_from_slice(rest);
        xor_in(&mut tmp, &pad);
        xor_in(&mut checksum, &tmp);
        out.extend_from_slice(&tmp[..rest.len()]);
        let forged = tmp[..BLOCK - 1] == delta[..BLOCK - 1];
        times3(&mut delta);
        xor_in(&mut checksum, &delta);
        self.enc(&mut checksum);
        (!forged).then_some(checksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Block = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];
    const NONCE: Block = [
        0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        0x00,
    ];

    /// The vectors of Mumble's own test (src/tests/TestCrypt/TestCrypt.cpp,
    /// `TestCrypt::testvectors`), taken from draft-krovetz-ocb-00: key and
    /// nonce 00..0f, the empty message and the 40 bytes 00..27.
    #[test]
    fn mumble_test_vectors() {
        let ocb = Ocb2::new(&KEY);
        let mut out = Vec::new();
        let tag = ocb.encrypt(&[], &KEY, &mut out);
        assert!(out.is_empty());
        assert_eq!(
            tag,
            [
                0xBF, 0x31, 0x08, 0x13, 0x07, 0x73, 0xAD, 0x5E, 0xC7, 0x0E, 0xC6, 0x9E, 0x78, 0x75,
                0xA7, 0xB0
            ]
        );
        let source: Vec<u8> = (0..40).collect();
        let tag = ocb.encrypt(&source, &KEY, &mut out);
        assert_eq!(
            tag,
            [
                0x9D, 0xB0, 0xCD, 0xF8, 0x80, 0xF7, 0x3E, 0x3E, 0x10, 0xD4, 0xEB, 0x32, 0x17, 0x76,
                0x66, 0x88
            ]
        );
        assert_eq!(
            out,
            [
                0xF7, 0x5D, 0x6B, 0xC8, 0xB4, 0xDC, 0x8D, 0x66, 0xB8, 0x36, 0xA2, 0xB0, 0x8B, 0x32,
                0xA6, 0x36, 0x9F, 0x1C, 0xD3, 0xC5, 0x22, 0x8D, 0x79, 0xFD, 0x6C, 0x26, 0x7F, 0x5F,
                0x6A, 0xA7, 0xB2, 0x31, 0xC7, 0xDF, 0xB9, 0xD5, 0x99, 0x51, 0xAE, 0x9C
            ]
        );
        let mut plain = Vec::new();
        assert_eq!(ocb.decrypt(&out, &KEY, &mut plain), Some(tag));
        assert_eq!(plain, source);
    }

    /// Mumble's `TestCrypt::authcrypt`: every length 0..128 round trips
    /// with equal tags.
    #[test]
    fn round_trips_every_length() {
        let ocb = Ocb2::new(&KEY);
        for len in 0..128u8 {
            let src: Vec<u8> = (1..=len).collect();
            let mut enc = Vec::new();
            let tag = ocb.encrypt(&src, &NONCE, &mut enc);
            assert_eq!(enc.len(), src.len());
            let mut dec = Vec::new();
            assert_eq!(ocb.decrypt(&enc, &NONCE, &mut dec), Some(tag), "len {len}");
            assert_eq!(dec, src);
        }
    }

    /// Mumble's `TestCrypt::xexstarAttack`: the forgery of section 4.1 of
    /// eprint 2019/311 is refused by the decryptor, and the encryptor
    /// changes the critical block so the attack has nothing to work on.
    #[test]
    fn xexstar_attack_refused() {
        let ocb = Ocb2::new(&KEY);
        let mut src = [0u8; 2 * BLOCK];
        src[BLOCK - 1] = (BLOCK * 8) as u8;
        src[BLOCK..].fill(42);
        // The attack needs the unmodified encryption: build it as Mumble's
        // test does with `modifyPlainOnXEXStarAttack = false`, by hand.
        let mut delta = NONCE;
        ocb.enc(&mut delta);
        times2(&mut delta);
        let mut c1 = [0u8; BLOCK];
        c1.copy_from_slice(&src[..BLOCK]);
        xor_in(&mut c1, &delta);
        ocb.enc(&mut c1);
        xor_in(&mut c1, &delta);
        let mut forged = c1;
        forged[BLOCK - 1] ^= (BLOCK * 8) as u8;
        let mut out = Vec::new();
        assert_eq!(ocb.decrypt(&forged, &NONCE, &mut out), None);
        // With the counter-measure the first plaintext byte comes back
        // flipped and the tags agree.
        let mut enc = Vec::new();
        let tag = ocb.encrypt(&src, &NONCE, &mut enc);
        let mut dec = Vec::new();
        assert_eq!(ocb.decrypt(&enc, &NONCE, &mut dec), Some(tag));
        assert_eq!(dec[0], 1);
        assert_eq!(dec[1..], src[1..]);
    }
}
