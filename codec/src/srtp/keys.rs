//! Keys from the QUIC session's TLS exporter, the way DTLS-SRTP does it.
//!
//! RFC 5764 §4.2 takes `2 * (key + salt)` bytes from the TLS exporter
//! (RFC 5705; RFC 8446 §7.5 in TLS 1.3) and cuts them, in this order, into
//!
//! ```text
//! client_write_SRTP_master_key[16] | server_write_SRTP_master_key[16] |
//! client_write_SRTP_master_salt[12] | server_write_SRTP_master_salt[12]
//! ```
//!
//! Each pair is an SRTP *master* key and salt for one direction; the SRTP
//! key derivation (RFC 3711 §4.3.1, AES-CM PRF, key derivation rate 0; kept
//! for the AEAD transforms by RFC 7714 §11) then yields the session keys and
//! salts of SRTP and of SRTCP. A vendor using libsrtp can therefore feed
//! `master_key | master_salt` of a direction to libsrtp as the
//! `SRTP_AEAD_AES_128_GCM` master key of that direction and interoperate.
//!
//! The terminal is the QUIC client: it protects with the client_write keys
//! ([`Direction::Uplink`]) and the gateway unprotects with them; the gateway
//! protects with the server_write keys ([`Direction::Downlink`]).

use std::fmt;

use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit};
use aes_gcm::aes::Aes128;

use super::Error;

/// TLS exporter label of the media-plane keys.
///
/// RFC 5764 uses `EXTRACTOR-dtls_srtp` for DTLS; this label is ours, and RFC
/// 5705 §4 reserves labels beginning with `EXPERIMENTAL` for use without IANA
/// registration, so it begins with that prefix. Changing it changes every key.
pub const EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL-ptt-srtp";

/// TLS exporter context: the DTLS-SRTP protection profile number of
/// `SRTP_AEAD_AES_128_GCM` (RFC 7714 §14.2: `{0x00, 0x07}`), so that another
/// profile added later gets independent keys from the same session.
pub const EXPORTER_CONTEXT: &[u8] = &[0x00, 0x07];

/// Bytes of an AEAD_AES_128_GCM key (RFC 7714 §12).
pub const KEY_LEN: usize = 16;

/// Bytes of an AEAD_AES_128_GCM salt (RFC 7714 §12: 96 bits).
pub const SALT_LEN: usize = 12;

/// Bytes to ask the TLS exporter for: two master keys and two master salts
/// (RFC 5764 §4.2), `2 * 16 + 2 * 12`.
pub const EXPORTER_LEN: usize = 2 * KEY_LEN + 2 * SALT_LEN;

/// RFC 3711 §4.3.1 key derivation labels used by the AEAD transforms (the
/// authentication-key labels 0x01 and 0x04 have no use: GCM's tag is keyed by
/// the encryption key).
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_KEY: u8 = 0x03;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Which way media flows, and so which exported keys protect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Terminal (QUIC client) to gateway: RFC 5764's client_write keys.
    Uplink,
    /// Gateway (QUIC server) to terminal: RFC 5764's server_write keys.
    Downlink,
}

/// Which end of the QUIC connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The terminal, which opened the QUIC connection.
    Client,
    /// The gateway.
    Server,
}

impl Role {
    /// The direction this end protects (sends) with.
    pub fn sending(self) -> Direction {
        match self {
            Role::Client => Direction::Uplink,
            Role::Server => Direction::Downlink,
        }
    }

    /// The direction this end unprotects (receives) with.
    pub fn receiving(self) -> Direction {
        match self {
            Role::Client => Direction::Downlink,
            Role::Server => Direction::Uplink,
        }
    }
}

/// One AES-128-GCM key and the 96-bit salt its IVs are made from.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySalt {
    /// The AES-128 key.
    pub key: [u8; KEY_LEN],
    /// XORed into every IV (RFC 7714 §8.1, §9.1).
    pub salt: [u8; SALT_LEN],
}

impl fmt::Debug for KeySalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySalt { .. }")
    }
}

/// The session keys of one direction: what a [`Sender`](super::Sender) or
/// [`Receiver`](super::Receiver) is made from.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Protects RTP packets (SRTP).
    pub rtp: KeySalt,
    /// Protects RTCP packets (SRTCP).
    pub rtcp: KeySalt,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

impl SessionKeys {
    /// Derives the session keys of one direction from its master key and
    /// salt (RFC 3711 §4.3.1 with key derivation rate 0: one AES block per
    /// key or salt, the 96-bit master salt zero-padded to 112 bits as libsrtp
    /// does).
    pub fn derive(master: &KeySalt) -> SessionKeys {
        let prf = Aes128::new(&master.key.into());
        let mut keys = SessionKeys {
            rtp: KeySalt {
                key: [0; KEY_LEN],
                salt: [0; SALT_LEN],
            },
            rtcp: KeySalt {
                key: [0; KEY_LEN],
                salt: [0; SALT_LEN],
            },
        };
        derive(&prf, &master.salt, LABEL_RTP_KEY, &mut keys.rtp.key);
        derive(&prf, &master.salt, LABEL_RTP_SALT, &mut keys.rtp.salt);
        derive(&prf, &master.salt, LABEL_RTCP_KEY, &mut keys.rtcp.key);
        derive(&prf, &master.salt, LABEL_RTCP_SALT, &mut keys.rtcp.salt);
        keys
    }
}

/// The four master secrets exported from one QUIC session.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeys {
    /// Terminal to gateway (client_write).
    pub uplink: KeySalt,
    /// Gateway to terminal (server_write).
    pub downlink: KeySalt,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeys { .. }")
    }
}

impl MasterKeys {
    /// Splits the exporter output (RFC 5764 §4.2 order).
    ///
    /// Call it with the [`EXPORTER_LEN`] bytes the QUIC connection's
    /// `export_keying_material(out, EXPORTER_LABEL, EXPORTER_CONTEXT)` wrote,
    /// once the handshake is complete; both ends get the same bytes. Any
    /// other length is [`Error::ExporterLength`].
    pub fn from_exporter(exported: &[u8]) -> Result<MasterKeys, Error> {
        if exported.len() != EXPORTER_LEN {
            return Err(Error::ExporterLength);
        }
        let mut keys = MasterKeys {
            uplink: KeySalt {
                key: [0; KEY_LEN],
                salt: [0; SALT_LEN],
            },
            downlink: KeySalt {
                key: [0; KEY_LEN],
                salt: [0; SALT_LEN],
            },
        };
        let (client_key, rest) = exported.split_at(KEY_LEN);
        let (server_key, rest) = rest.split_at(KEY_LEN);
        let (client_salt, server_salt) = rest.split_at(SALT_LEN);
        keys.uplink.key.copy_from_slice(client_key);
        keys.downlink.key.copy_from_slice(server_key);
        keys.uplink.salt.copy_from_slice(client_salt);
        keys.downlink.salt.copy_from_slice(server_salt);
        Ok(keys)
    }

    /// The master key and salt of one direction.
    pub fn master(&self, direction: Direction) -> &KeySalt {
        match direction {
            Direction::Uplink => &self.uplink,
            Direction::Downlink => &self.downlink,
        }
    }

    /// The session keys of one direction (see [`SessionKeys::derive`]).
    pub fn session(&self, direction: Direction) -> SessionKeys {
        SessionKeys::derive(self.master(direction))
    }
}

/// RFC 3711 §4.3.1 with key derivation rate 0 and an output of at most one
/// block: `out = AES_k(x || 0x0000)` truncated, where `x` is the master salt
/// (left-aligned in 112 bits) XOR the label at byte 7. Takes salts of 12
/// (AEAD) or 14 (AES-CM, for RFC 3711's own test vector) bytes.
fn derive(prf: &Aes128, master_salt: &[u8], label: u8, out: &mut [u8]) {
    debug_assert!(master_salt.len() <= 14 && out.len() <= 16);
    let mut block = [0u8; 16];
    block[..master_salt.len()].copy_from_slice(master_salt);
    block[7] ^= label;
    let mut block = block.into();
    prf.encrypt_block(&mut block);
    out.copy_from_slice(&block[..out.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    /// RFC 3711 Appendix B.3 (key derivation test vectors): master key
    /// E1F97A0D..., master salt 0EC675AD... (112 bits), labels 0 and 2.
    #[test]
    fn rfc_3711_b3_key_derivation() {
        let prf = Aes128::new_from_slice(&unhex("E1F97A0D3E018BE0D64FA32C06DE4139"))
            .expect("16-byte key");
        let salt = unhex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(&prf, &salt, LABEL_RTP_KEY, &mut key);
        assert_eq!(key[..], unhex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        let mut session_salt = [0u8; 14];
        derive(&prf, &salt, LABEL_RTP_SALT, &mut session_salt);
        assert_eq!(session_salt[..], unhex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    }

    /// The 96-bit-salt convention: the session salt libsrtp and webrtc-rs's
    /// `srtp` crate derive for SRTP_AEAD_AES_128_GCM from master key
    /// 00..0f and master salt 40..4b (label 2 at byte 7 of the zero-padded
    /// 112-bit salt), as pinned by a public cross-check against webrtc-rs.
    #[test]
    fn aead_salt_is_zero_padded_like_libsrtp() {
        let master = KeySalt {
            key: core::array::from_fn(|i| i as u8),
            salt: core::array::from_fn(|i| 0x40 + i as u8),
        };
        let session = SessionKeys::derive(&master);
        assert_eq!(session.rtp.salt[..], unhex("1fcd5d561e66dc49ec1c3ccb")[..]);
    }

    #[test]
    fn exporter_output_is_cut_in_rfc_5764_order() {
        let exported: Vec<u8> = (0..EXPORTER_LEN as u8).collect();
        let keys = MasterKeys::from_exporter(&exported).expect("56 bytes");
        assert_eq!(keys.uplink.key[..], exported[0..16]);
        assert_eq!(keys.downlink.key[..], exported[16..32]);
        assert_eq!(keys.uplink.salt[..], exported[32..44]);
        assert_eq!(keys.downlink.salt[..], exported[44..56]);
        assert_eq!(keys.master(Role::Client.sending()), &keys.uplink);
        assert_eq!(keys.master(Role::Server.receiving()), &keys.uplink);
        assert_eq!(keys.master(Role::Server.sending()), &keys.downlink);
        assert_eq!(keys.master(Role::Client.receiving()), &keys.downlink);
        for len in [0, 55, 57, 64] {
            assert_eq!(
                MasterKeys::from_exporter(&vec![0; len]),
                Err(Error::ExporterLength)
            );
        }
    }

    #[test]
    fn the_four_session_secrets_differ_and_debug_hides_them() {
        let exported = [0x5a; EXPORTER_LEN];
        let keys = MasterKeys::from_exporter(&exported).expect("56 bytes");
        let session = keys.session(Direction::Uplink);
        assert_ne!(session.rtp.key, session.rtcp.key);
        assert_ne!(session.rtp.salt, session.rtcp.salt);
        // Same master secrets in both directions here, so the same session keys:
        // the directions differ only through the exporter's distinct bytes.
        assert_eq!(session, keys.session(Direction::Downlink));
        let shown = format!("{keys:?} {session:?}");
        assert!(
            !shown.contains("90"),
            "no key byte (0x5a = 90) printed: {shown}"
        );
    }
}
