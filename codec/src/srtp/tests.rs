//! RFC 7714's own test vectors, byte for byte, through the crate's code.
//!
//! Source: RFC 7714 (AES-GCM Authenticated Encryption in SRTP), §16.1
//! (SRTP, AEAD_AES_128_GCM) and §17.1 / §17.3 (SRTCP, AEAD_AES_128_GCM,
//! encrypted and authenticated only). The RFC gives the *session* key and
//! salt directly (no key derivation): key 000102...0f, salt "Quid pro quo".
//! The same bytes appear in libsrtp's and several public implementations'
//! test suites, which agree with each other.

use super::aead::Cipher;
use super::keys::{KeySalt, SessionKeys};
use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// RFC 7714 §16 / §17: the session key and salt of every AES-128 vector.
fn rfc_keys() -> SessionKeys {
    let key_salt = KeySalt {
        key: core::array::from_fn(|i| i as u8),
        salt: *b"Quid pro quo",
    };
    SessionKeys {
        rtp: key_salt.clone(),
        rtcp: key_salt,
    }
}

/// RFC 7714 §16: the RTP packet (SSRC 0x5501a0b2, sequence 0xf17b, ROC 0),
/// payload "Gallia est omnis divisa in partes tres".
const RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                         20646976 69736120 696e2070 61727465 73207472 6573";

/// RFC 7714 §16.1.1: the SRTP packet, header || ciphertext || tag.
const SRTP_PROTECTED: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                              be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                              6a9152cf 765ee439 0cce";

/// RFC 7714 §17: the RTCP packet (sender report, SSRC "Mars"), SRTCP index
/// 0x5d4. (The §17 preamble prints a slightly different packet; §17.1-17.4
/// all encrypt this one.)
const RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                          4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

/// RFC 7714 §17.1: encrypted SRTCP, header || ciphertext || tag || E|index.
const SRTCP_PROTECTED: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                               6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                               96cf4d2f c5abf872 45d9eade 800005d4";

/// RFC 7714 §17.3: authenticated-only SRTCP (E bit clear), packet || tag ||
/// E|index.
const SRTCP_AUTH_ONLY: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                               4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968
                               3dd78ec9 2ae58790 125f62b3 000005d4";

const RTCP_INDEX: u32 = 0x5d4;

#[test]
fn rfc_7714_ivs() {
    let cipher = Cipher::new(&rfc_keys().rtp);
    // §16.1.1 and §17.1 print the IVs.
    assert_eq!(
        cipher.rtp_iv(0x5501_a0b2, 0xf17b)[..],
        unhex("51753c6580c2726f20718414")[..]
    );
    assert_eq!(
        cipher.rtcp_iv(0x4d61_7273, RTCP_INDEX)[..],
        unhex("517524055203726f207170bb")[..]
    );
}

#[test]
fn rfc_7714_16_1_srtp_protect_and_unprotect() {
    let plain = unhex(RTP_PLAIN);
    let protected = unhex(SRTP_PROTECTED);
    let mut buf = [0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let mut sender = Sender::new(&rfc_keys(), 0x5501_a0b2);
    let len = sender.protect(&mut buf, plain.len()).expect("protect");
    assert_eq!(buf[..len], protected[..]);

    let mut receiver = Receiver::new(&rfc_keys(), 0x5501_a0b2);
    let packet = receiver.unprotect(&mut buf[..len]).expect("unprotect");
    assert_eq!(buf[..len - TAG_LEN], plain[..]);
    assert_eq!(packet.index, 0xf17b);
    assert_eq!(packet.payload, 12..plain.len());
    assert_eq!(
        &buf[packet.payload],
        b"Gallia est omnis divisa in partes tres"
    );
}

#[test]
fn rfc_7714_16_1_every_flipped_bit_fails_authentication() {
    let protected = unhex(SRTP_PROTECTED);
    for bit in 0..protected.len() * 8 {
        let mut buf = protected.clone();
        buf[bit / 8] ^= 1 << (bit % 8);
        let mut receiver = Receiver::new(&rfc_keys(), 0x5501_a0b2);
        let refused = receiver.unprotect(&mut buf);
        // Flips in the version, CC or X bits, or in the SSRC, are refused
        // before the AEAD; every other flip by it.
        assert!(refused.is_err(), "bit {bit} flipped was accepted");
        if bit >= 12 * 8 {
            assert_eq!(refused, Err(Error::AuthFailed), "bit {bit}");
            // The refused body is left as it came.
            let mut expected = protected.clone();
            expected[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(buf, expected);
        }
    }
}

#[test]
fn rfc_7714_17_1_srtcp_encrypted() {
    let plain = unhex(RTCP_PLAIN);
    let protected = unhex(SRTCP_PROTECTED);
    let mut buf = [0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let mut sender = Sender::new(&rfc_keys(), 0x4d61_7273);
    sender.set_next_rtcp(RTCP_INDEX);
    let len = sender.protect_rtcp(&mut buf, plain.len()).expect("protect");
    assert_eq!(buf[..len], protected[..]);

    let mut receiver = Receiver::new(&rfc_keys(), 0x4d61_7273);
    let plain_len = receiver.unprotect_rtcp(&mut buf[..len]).expect("unprotect");
    assert_eq!(buf[..plain_len], plain[..]);
    let mut again = protected.clone();
    assert_eq!(receiver.unprotect_rtcp(&mut again), Err(Error::Replayed));
}

#[test]
fn rfc_7714_17_3_srtcp_authenticated_only() {
    let plain = unhex(RTCP_PLAIN);
    let protected = unhex(SRTCP_AUTH_ONLY);
    let mut buf = [0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let mut sender = Sender::new(&rfc_keys(), 0x4d61_7273);
    sender.set_next_rtcp(RTCP_INDEX);
    let len = sender
        .protect_rtcp_unencrypted(&mut buf, plain.len())
        .expect("protect");
    assert_eq!(buf[..len], protected[..]);

    let mut receiver = Receiver::new(&rfc_keys(), 0x4d61_7273);
    let plain_len = receiver.unprotect_rtcp(&mut buf[..len]).expect("unprotect");
    assert_eq!(buf[..plain_len], plain[..]);

    // A flipped bit in the clear body, or the E bit set on it, fails.
    for at in [9, protected.len() - 4] {
        let mut forged = protected.clone();
        forged[at] ^= 0x80;
        let mut receiver = Receiver::new(&rfc_keys(), 0x4d61_7273);
        assert_eq!(
            receiver.unprotect_rtcp(&mut forged),
            Err(Error::AuthFailed),
            "byte {at}"
        );
        let mut expected = protected.clone();
        expected[at] ^= 0x80;
        assert_eq!(forged, expected, "refused packet left as it came");
    }
}

#[test]
fn srtcp_index_is_spent_at_2_pow_31() {
    let plain = unhex(RTCP_PLAIN);
    let mut buf = [0u8; 128];
    buf[..plain.len()].copy_from_slice(&plain);
    let mut sender = Sender::new(&rfc_keys(), 0x4d61_7273);
    sender.set_next_rtcp(0x7fff_ffff);
    sender
        .protect_rtcp(&mut buf, plain.len())
        .expect("last index");
    buf[..plain.len()].copy_from_slice(&plain);
    assert_eq!(
        sender.protect_rtcp(&mut buf, plain.len()),
        Err(Error::Exhausted)
    );
}
