//! AEAD_AES_128_GCM as SRTP (RFC 7714 §8) and SRTCP (RFC 7714 §9) apply it:
//! the IV layouts, what is associated data and what is encrypted, and where
//! the tag and the SRTCP index go. Stateless: the replay window and the
//! rollover counter live in [`Sender`](super::Sender) and
//! [`Receiver`](super::Receiver).

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};

use super::keys::{KeySalt, SALT_LEN};
use super::{Error, SRTCP_INDEX_LEN, TAG_LEN};

/// The E bit of the SRTCP index word: the packet body is encrypted.
pub(crate) const E_BIT: u32 = 0x8000_0000;

/// One direction's AES-128-GCM key schedule and salt, for RTP or for RTCP.
#[derive(Clone)]
pub(crate) struct Cipher {
    gcm: Aes128Gcm,
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher { .. }")
    }
}

impl Cipher {
    pub(crate) fn new(keys: &KeySalt) -> Cipher {
        Cipher {
            gcm: Aes128Gcm::new(&keys.key.into()),
            salt: keys.salt,
        }
    }

    /// RFC 7714 §8.1: `salt XOR (0x0000 || SSRC || ROC || SEQ)`.
    pub(crate) fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        // The 48-bit index is ROC (32 bits) || SEQ (16 bits).
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..8]);
        self.salted(iv)
    }

    /// RFC 7714 §9.1: `salt XOR (0x0000 || SSRC || 0x0000 || 0 || index)`.
    pub(crate) fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&(index & !E_BIT).to_be_bytes());
        self.salted(iv)
    }

    fn salted(&self, mut iv: [u8; 12]) -> [u8; 12] {
        for (byte, salt) in iv.iter_mut().zip(self.salt) {
            *byte ^= salt;
        }
        iv
    }

    /// Encrypts `buf[header_len..len]` in place with `buf[..header_len]` as
    /// associated data and writes the tag to `buf[len..len + TAG_LEN]`.
    /// The caller checked that `buf` holds `len + TAG_LEN` bytes.
    pub(crate) fn seal_rtp(
        &self,
        ssrc: u32,
        index: u64,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
    ) -> Result<usize, Error> {
        let iv = self.rtp_iv(ssrc, index);
        let (aad, rest) = buf.split_at_mut(header_len);
        let (body, tail) = rest.split_at_mut(len - header_len);
        let tag = self
            .gcm
            .encrypt_in_place_detached(Nonce::from_slice(&iv), aad, body)
            .map_err(|_| Error::TooLong)?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        Ok(len + TAG_LEN)
    }

    /// Authenticates and decrypts `buf[header_len..buf.len() - TAG_LEN]` in
    /// place; on success returns where the plaintext ends. On failure the
    /// body is left as it was (aes-gcm checks the tag before decrypting).
    pub(crate) fn open_rtp(
        &self,
        ssrc: u32,
        index: u64,
        buf: &mut [u8],
        header_len: usize,
    ) -> Result<usize, Error> {
        let end = buf.len() - TAG_LEN;
        let iv = self.rtp_iv(ssrc, index);
        let (aad, rest) = buf.split_at_mut(header_len);
        let (body, tag) = rest.split_at_mut(end - header_len);
        self.gcm
            .decrypt_in_place_detached(Nonce::from_slice(&iv), aad, body, Tag::from_slice(tag))
            .map_err(|_| Error::AuthFailed)?;
        Ok(end)
    }

    /// Protects the RTCP packet `buf[..len]` (len >= 8, checked by the
    /// caller, as is room for `len + TAG_LEN + 4`) with SRTCP index `index`:
    /// `header[8] || body (encrypted if `encrypt`) || tag || E|index`.
    pub(crate) fn seal_rtcp(
        &self,
        index: u32,
        encrypt: bool,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, Error> {
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let iv = self.rtcp_iv(ssrc, index);
        let word = (index & !E_BIT) | if encrypt { E_BIT } else { 0 };
        let tag = if encrypt {
            // RFC 7714 §9.2: AAD = first 8 bytes || E|index.
            let mut aad = [0u8; 8 + SRTCP_INDEX_LEN];
            aad[..8].copy_from_slice(&buf[..8]);
            aad[8..].copy_from_slice(&word.to_be_bytes());
            self.gcm
                .encrypt_in_place_detached(Nonce::from_slice(&iv), &aad, &mut buf[8..len])
                .map_err(|_| Error::TooLong)?
        } else {
            // RFC 7714 §9.2 with E clear: AAD = the whole packet || E|index,
            // nothing encrypted. Lay the index after the packet to make the
            // AAD one slice, then move it behind the tag.
            buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word.to_be_bytes());
            self.gcm
                .encrypt_in_place_detached(
                    Nonce::from_slice(&iv),
                    &buf[..len + SRTCP_INDEX_LEN],
                    &mut [],
                )
                .map_err(|_| Error::TooLong)?
        };
        buf[len..len + TAG_LEN].copy_from_slice(&tag);
        buf[len + TAG_LEN..len + TAG_LEN + SRTCP_INDEX_LEN].copy_from_slice(&word.to_be_bytes());
        Ok(len + TAG_LEN + SRTCP_INDEX_LEN)
    }

    /// Authenticates (and, with the E bit, decrypts) the SRTCP packet that is
    /// all of `buf` (at least 8 + TAG_LEN + 4 bytes, checked by the caller);
    /// returns the length of the RTCP packet left at the start of `buf`.
    pub(crate) fn open_rtcp(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let len = buf.len() - TAG_LEN - SRTCP_INDEX_LEN;
        let word_at = len + TAG_LEN;
        let word_bytes: [u8; 4] = [
            buf[word_at],
            buf[word_at + 1],
            buf[word_at + 2],
            buf[word_at + 3],
        ];
        let word = u32::from_be_bytes(word_bytes);
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let iv = self.rtcp_iv(ssrc, word);
        let mut tag = Tag::default();
        tag.copy_from_slice(&buf[len..len + TAG_LEN]);
        if word & E_BIT != 0 {
            let mut aad = [0u8; 8 + SRTCP_INDEX_LEN];
            aad[..8].copy_from_slice(&buf[..8]);
            aad[8..].copy_from_slice(&word_bytes);
            self.gcm
                .decrypt_in_place_detached(Nonce::from_slice(&iv), &aad, &mut buf[8..len], &tag)
                .map_err(|_| Error::AuthFailed)?;
        } else {
            // Make the AAD (packet || E|index) one slice by copying the index
            // over the start of the tag, which was saved above.
            buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word_bytes);
            let verified = self.gcm.decrypt_in_place_detached(
                Nonce::from_slice(&iv),
                &buf[..len + SRTCP_INDEX_LEN],
                &mut [],
                &tag,
            );
            // Put the tag back so a refused packet is left as it came.
            buf[len..len + TAG_LEN].copy_from_slice(&tag);
            verified.map_err(|_| Error::AuthFailed)?;
        }
        Ok(len)
    }
}
