//! One SSRC's stream in one direction: the sending end ([`Sender`]) and the
//! receiving end ([`Receiver`]), with the rollover counter (RFC 3711 §3.3.1)
//! and, on the receiving end, the replay windows (RFC 3711 §3.3.2).

use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::aead::{Cipher, E_BIT};
use super::keys::SessionKeys;
use super::replay::Window;
use super::rtp::{self, Header};
use super::{Error, SRTCP_INDEX_LEN, TAG_LEN};

/// Largest SRTCP index (31 bits, RFC 3711 §3.4); after it the keys must change.
const MAX_SRTCP_INDEX: u32 = !E_BIT;

/// RFC 3711 §3.3.1 (Appendix A): the rollover counter `v` a packet with
/// sequence number `seq` most likely has, given the highest index seen so
/// far. Returns the 48-bit index `v * 2^16 + seq`, or `None` if `v` would be
/// -1 (a packet from before the stream's first) or 2^32 (the counter is
/// exhausted).
fn estimate(highest: Option<u64>, seq: u16) -> Option<u64> {
    let Some(highest) = highest else {
        // The stream's first packet: ROC starts at 0 (RFC 3711 §3.3.1).
        return Some(u64::from(seq));
    };
    let roc = highest >> 16;
    let s_l = highest as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    if v > u64::from(u32::MAX) {
        return None;
    }
    Some((v << 16) | u64::from(seq))
}

/// The sending end of one SSRC's SRTP and SRTCP stream.
///
/// Make one per SSRC this end sends, from the session keys of the direction
/// it sends in ([`Role::sending`](super::Role::sending)). It refuses to
/// protect a packet whose index is not newer than the last one it
/// protected: AES-GCM must never see the same IV twice under one key. (For
/// the same reason it is not `Clone`: two copies would number packets
/// independently under one key.)
#[derive(Debug)]
pub struct Sender {
    rtp: Cipher,
    rtcp: Cipher,
    ssrc: u32,
    /// Index of the last RTP packet protected.
    highest: Option<u64>,
    /// SRTCP index of the next RTCP packet.
    next_rtcp: u32,
}

impl Sender {
    /// A sender for `ssrc` with fresh counters (ROC 0, SRTCP index 0).
    ///
    /// Number the stream's first packet below 32,768 (a random value in
    /// 0..32,768 keeps RFC 3550's unpredictability): the receiver takes ROC 0
    /// from the first packet it gets, and a first packet numbered above
    /// 32,767 could be overtaken by packets from after the wrap, which it
    /// would then refuse until an older packet arrives.
    pub fn new(keys: &SessionKeys, ssrc: u32) -> Sender {
        Sender {
            rtp: Cipher::new(&keys.rtp),
            rtcp: Cipher::new(&keys.rtcp),
            ssrc,
            highest: None,
            next_rtcp: 0,
        }
    }

    /// The SSRC this sender protects.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The rollover counter of the last packet protected (0 before any).
    pub fn roc(&self) -> u32 {
        // The index is 48 bits: its top 32 are the ROC.
        self.highest.map_or(0, |h| (h >> 16) as u32)
    }

    /// Protects the RTP packet `buf[..len]` in place (RFC 7714 §8): the
    /// payload is encrypted and the 16-byte tag appended. Returns the length
    /// of the SRTP packet, `len + TAG_LEN`.
    ///
    /// Call it once per packet, sequence numbers increasing (by less than
    /// 32,768 per packet; wrapping past 65,535 bumps the rollover counter).
    /// Errors leave `buf` and the sender unchanged: the header's errors,
    /// [`Error::WrongSsrc`], [`Error::BufferTooSmall`] if `buf` is shorter than
    /// `len + TAG_LEN`, [`Error::IndexReused`] for a sequence number not newer
    /// than the last, [`Error::Exhausted`] when the rollover counter is spent.
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        let header = Header::parse(packet)?;
        if header.ssrc != self.ssrc {
            return Err(Error::WrongSsrc);
        }
        if buf.len() < len + TAG_LEN {
            return Err(Error::BufferTooSmall);
        }
        let index = estimate(self.highest, header.sequence).ok_or(Error::Exhausted)?;
        if self.highest.is_some_and(|h| index <= h) {
            return Err(Error::IndexReused);
        }
        let out = self.rtp.seal_rtp(self.ssrc, index, buf, header.len, len)?;
        self.highest = Some(index);
        Ok(out)
    }

    /// Protects the RTCP compound packet `buf[..len]` in place (RFC 7714
    /// §9, E bit set: everything after the first 8 bytes is encrypted), with
    /// the next SRTCP index. Returns the SRTCP length, `len + TAG_LEN + 4`.
    ///
    /// The packet's sender SSRC (bytes 4..8) must be this sender's.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        self.seal_rtcp(buf, len, true)
    }

    fn seal_rtcp(&mut self, buf: &mut [u8], len: usize, encrypt: bool) -> Result<usize, Error> {
        let packet = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        check_rtcp(packet, self.ssrc)?;
        if buf.len() < len + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(Error::BufferTooSmall);
        }
        if self.next_rtcp > MAX_SRTCP_INDEX {
            return Err(Error::Exhausted);
        }
        let out = self.rtcp.seal_rtcp(self.next_rtcp, encrypt, buf, len)?;
        self.next_rtcp += 1;
        Ok(out)
    }

    #[cfg(test)]
    pub(crate) fn set_next_rtcp(&mut self, index: u32) {
        self.next_rtcp = index;
    }

    #[cfg(test)]
    pub(crate) fn protect_rtcp_unencrypted(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, Error> {
        self.seal_rtcp(buf, len, false)
    }
}

/// The sending end of one SSRC's SRTP and SRTCP stream that many threads
/// may use at once through `&self`: each packet takes the next index from an
/// atomic counter, so no two packets ever share an IV and no lock is held.
///
/// This is the gateway's downlink to one listener: every relayed frame, from
/// whichever group and talker, is the next packet of the listener's one
/// stream. Take an index with [`next`](SharedSender::next), write the RTP
/// header with that index's sequence number
/// ([`sequence_of`](SharedSender::sequence_of)), then
/// [`seal`](SharedSender::seal). Indices taken but never sealed are gaps the
/// receiver counts as loss, which is what they are.
#[derive(Debug)]
pub struct SharedSender {
    rtp: Cipher,
    rtcp: Cipher,
    ssrc: u32,
    /// Index of the next RTP packet.
    next: AtomicU64,
    /// SRTCP index of the next RTCP packet.
    next_rtcp: AtomicU32,
}

/// Largest RTP packet index: ROC 2^32 - 1, sequence 65,535.
const MAX_INDEX: u64 = (1 << 48) - 1;

impl SharedSender {
    /// A sender for `ssrc` whose first packet has sequence number `first`,
    /// ROC 0. `first` must be below 32,768 (see [`Sender::new`]); it is
    /// taken modulo 32,768.
    pub fn new(keys: &SessionKeys, ssrc: u32, first: u16) -> SharedSender {
        SharedSender {
            rtp: Cipher::new(&keys.rtp),
            rtcp: Cipher::new(&keys.rtcp),
            ssrc,
            next: AtomicU64::new(u64::from(first & 0x7fff)),
            next_rtcp: AtomicU32::new(0),
        }
    }

    /// The SSRC this sender protects.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Takes the next packet index; `None` once the index space is spent
    /// (then the keys are: the terminal must reconnect).
    pub fn next(&self) -> Option<u64> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index <= MAX_INDEX).then_some(index)
    }

    /// The RTP sequence number of packet `index`.
    pub fn sequence_of(index: u64) -> u16 {
        index as u16
    }

    /// Protects the RTP packet `buf[..len]` in place as packet `index`
    /// (taken from [`next`](SharedSender::next), once). Returns the SRTP
    /// length, `len + TAG_LEN`. Errors leave `buf` unchanged: the header's,
    /// [`Error::WrongSsrc`], [`Error::BufferTooSmall`], and
    /// [`Error::Malformed`] if the header's sequence number is not the
    /// index's.
    pub fn seal(&self, index: u64, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        let header = Header::parse(packet)?;
        if header.ssrc != self.ssrc {
            return Err(Error::WrongSsrc);
        }
        if header.sequence != Self::sequence_of(index) || index > MAX_INDEX {
            return Err(Error::Malformed);
        }
        if buf.len() < len + TAG_LEN {
            return Err(Error::BufferTooSmall);
        }
        self.rtp.seal_rtp(self.ssrc, index, buf, header.len, len)
    }

    /// Protects the RTCP compound packet `buf[..len]` in place with the next
    /// SRTCP index (E bit set), as [`Sender::protect_rtcp`] does.
    pub fn protect_rtcp(&self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let packet = buf.get(..len).ok_or(Error::BufferTooSmall)?;
        check_rtcp(packet, self.ssrc)?;
        if buf.len() < len + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(Error::BufferTooSmall);
        }
        let index = self.next_rtcp.fetch_add(1, Ordering::Relaxed);
        if index > MAX_SRTCP_INDEX {
            return Err(Error::Exhausted);
        }
        self.rtcp.seal_rtcp(index, true, buf, len)
    }
}

/// An RTP packet [`Receiver::unprotect`] accepted, decrypted in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprotected {
    /// Its header (still at the start of the buffer).
    pub header: Header,
    /// Where its payload lies in the buffer, padding removed.
    pub payload: Range<usize>,
    /// Its 48-bit packet index, `ROC * 65536 + sequence`.
    pub index: u64,
}

/// The receiving end of one SSRC's SRTP and SRTCP stream.
///
/// Make one per SSRC this end receives, from the session keys of the
/// direction it receives ([`Role::receiving`](super::Role::receiving)).
/// A packet is checked against the replay window before it is decrypted,
/// and the window and rollover counter move only once it authenticated, so
/// forged or replayed packets change nothing. (Not `Clone`: two copies
/// would each accept the same packet once.)
#[derive(Debug)]
pub struct Receiver {
    rtp: Cipher,
    rtcp: Cipher,
    ssrc: u32,
    /// RTP indices accepted; its highest gives the ROC and `s_l`.
    window: Window,
    /// SRTCP indices accepted.
    rtcp_window: Window,
}

impl Receiver {
    /// A receiver for `ssrc`, expecting its first packet with ROC 0.
    pub fn new(keys: &SessionKeys, ssrc: u32) -> Receiver {
        Receiver {
            rtp: Cipher::new(&keys.rtp),
            rtcp: Cipher::new(&keys.rtcp),
            ssrc,
            window: Window::default(),
            rtcp_window: Window::default(),
        }
    }

    /// The SSRC this receiver accepts.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The rollover counter of the newest packet accepted (0 before any).
    pub fn roc(&self) -> u32 {
        // The index is 48 bits: its top 32 are the ROC.
        self.window.highest().map_or(0, |h| (h >> 16) as u32)
    }

    /// Checks and decrypts the SRTP packet that is all of `buf`, in place.
    ///
    /// Call it on every datagram [`demux`](super::demux) classed as media and
    /// [`is_rtcp`](super::is_rtcp) did not claim. On success the plaintext
    /// RTP packet is `buf[..buf.len() - TAG_LEN]`. Errors, in the order they
    /// are checked: the header's ([`Error::Truncated`], [`Error::NotRtp`]),
    /// [`Error::Truncated`] without room for the tag, [`Error::WrongSsrc`],
    /// [`Error::TooOld`] / [`Error::Replayed`] from the window,
    /// [`Error::AuthFailed`], [`Error::BadPadding`]. On any error the receiver
    /// is unchanged and the payload bytes are as they came.
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<Unprotected, Error> {
        let header = Header::parse(buf)?;
        if buf.len() < header.len + TAG_LEN {
            return Err(Error::Truncated);
        }
        if header.ssrc != self.ssrc {
            return Err(Error::WrongSsrc);
        }
        let index = estimate(self.window.highest(), header.sequence).ok_or(Error::TooOld)?;
        self.window.check(index)?;
        let end = self.rtp.open_rtp(self.ssrc, index, buf, header.len)?;
        let payload_end = if header.padding {
            // RFC 3550 §5.1: the last byte counts the padding, itself included.
            let count = usize::from(buf[end - 1]);
            if count == 0 || count > end - header.len {
                return Err(Error::BadPadding);
            }
            end - count
        } else {
            end
        };
        self.window.accept(index);
        Ok(Unprotected {
            payload: header.len..payload_end,
            header,
            index,
        })
    }

    /// Checks and decrypts the SRTCP packet that is all of `buf`, in place
    /// (RFC 7714 §9; E bit set or clear). Returns the length of the RTCP
    /// compound packet left at `buf[..len]`.
    ///
    /// Call it on media datagrams [`is_rtcp`](super::is_rtcp) claimed.
    /// Errors: [`Error::Truncated`], [`Error::NotRtp`], [`Error::NotRtcp`],
    /// [`Error::WrongSsrc`], [`Error::TooOld`] / [`Error::Replayed`] (SRTCP
    /// index window), [`Error::AuthFailed`]; on any error nothing changes.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.len() < 8 + TAG_LEN + SRTCP_INDEX_LEN {
            return Err(Error::Truncated);
        }
        check_rtcp(&buf[..8], self.ssrc)?;
        let word_at = buf.len() - SRTCP_INDEX_LEN;
        let word = u32::from_be_bytes([
            buf[word_at],
            buf[word_at + 1],
            buf[word_at + 2],
            buf[word_at + 3],
        ]);
        let index = u64::from(word & !E_BIT);
        self.rtcp_window.check(index)?;
        let len = self.rtcp.open_rtcp(buf)?;
        self.rtcp_window.accept(index);
        Ok(len)
    }
}

/// An RTCP packet's first 8 bytes: version 2, an RTCP packet type (RFC 5761
/// §4: 192-223), the sender SSRC `ssrc`.
fn check_rtcp(packet: &[u8], ssrc: u32) -> Result<(), Error> {
    let head = packet.get(..8).ok_or(Error::Truncated)?;
    if head[0] >> 6 != rtp::VERSION {
        return Err(Error::NotRtp);
    }
    if !(192..=223).contains(&head[1]) {
        return Err(Error::NotRtcp);
    }
    if u32::from_be_bytes([head[4], head[5], head[6], head[7]]) != ssrc {
        return Err(Error::WrongSsrc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_follows_rfc_3711_appendix_a() {
        // First packet: ROC 0, whatever the sequence number.
        assert_eq!(estimate(None, 0xfff0), Some(0xfff0));
        // Next in line, and a wrap from 65535 to 0 bumps the ROC.
        assert_eq!(estimate(Some(0xfff0), 0xfff1), Some(0xfff1));
        assert_eq!(estimate(Some(0xffff), 0), Some(0x1_0000));
        // A late packet from before the wrap keeps the old ROC.
        assert_eq!(estimate(Some(0x1_0002), 0xfffe), Some(0xfffe));
        // ... and before the stream's first packet it has none.
        assert_eq!(estimate(Some(0x0002), 0xfffe), None);
        // Half the sequence space is the boundary in both directions.
        assert_eq!(estimate(Some(0x5_0000), 0x8000), Some(0x5_8000));
        assert_eq!(estimate(Some(0x5_0000), 0x8001), Some(0x4_8001));
        assert_eq!(estimate(Some(0x5_8000), 0x0000), Some(0x5_0000));
        assert_eq!(estimate(Some(0x5_8001), 0x0000), Some(0x6_0000));
        // The ROC's last value cannot roll over.
        let last = (u64::from(u32::MAX) << 16) | 0xffff;
        assert_eq!(estimate(Some(last), 0), None);
    }
}
