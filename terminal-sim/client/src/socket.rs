//! The client endpoint's UDP socket: QUIC and the SRTP media plane on one
//! port, told apart by the first byte of each datagram (RFC 9443).
//!
//! [`MediaSocket`] wraps the socket quinn would use. What it receives with a
//! first byte of 128-191 is media: taken out of quinn's buffers before quinn
//! sees them (with GRO a buffer holds several datagrams of `stride` bytes,
//! and only the media ones go; the rest are moved together) and handed to
//! the endpoint's [`Plane`], which routes them by SSRC to the terminal that
//! owns the stream. QUIC datagrams go to quinn; anything else (first byte
//! 0-63) is dropped. It also sends the terminals' media packets, and counts
//! every packet the endpoint sends.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ptt_codec::srtp;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::plane::Plane;

/// quinn's socket with the media plane taken out of it.
pub(crate) struct MediaSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    plane: Arc<Plane>,
}

impl fmt::Debug for MediaSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaSocket").finish_non_exhaustive()
    }
}

impl MediaSocket {
    /// Wraps `inner`, routing media to `plane` (which sends through
    /// `inner` too).
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, plane: Arc<Plane>) -> MediaSocket {
        MediaSocket { inner, plane }
    }
}

/// How many datagrams a transmit carries: with GSO, one per
/// `segment_size` bytes, the last possibly shorter.
pub(crate) fn segments(transmit: &Transmit<'_>) -> u64 {
    match transmit.segment_size {
        Some(size) if size > 0 && transmit.contents.len() > size => {
            transmit.contents.len().div_ceil(size) as u64
        }
        _ => 1,
    }
}

impl AsyncUdpSocket for MediaSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        self.plane.count_sent(segments(transmit));
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            let from = meta.addr;
            // GRO: media datagrams out, QUIC ones moved together; a buffer
            // left empty has length 0, which quinn skips.
            meta.len = srtp::divert(buf, meta.len, meta.stride, |packet| {
                self.plane.deliver(packet, from)
            });
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GRO buffer of `datagrams` `stride` apart, and its length.
    fn gro(datagrams: &[&[u8]], stride: usize) -> (Vec<u8>, usize) {
        let mut buf = vec![0xee; stride * datagrams.len() + 7];
        let mut len = 0;
        for (i, d) in datagrams.iter().enumerate() {
            assert!(d.len() <= stride && (d.len() == stride || i + 1 == datagrams.len()));
            buf[i * stride..i * stride + d.len()].copy_from_slice(d);
            len = i * stride + d.len();
        }
        (buf, len)
    }

    #[test]
    fn media_segments_leave_and_quic_segments_close_up_in_order() {
        let q1 = [0x41u8, 1, 1, 1];
        let m1 = [0x80u8, 111, 2, 2];
        let q2 = [0xc3u8, 3, 3, 3];
        let m2 = [0x81u8, 201, 4];
        let (mut buf, len) = gro(&[&q1, &m1, &q2, &m2], 4);
        let mut taken = Vec::new();
        let kept = srtp::divert(&mut buf, len, 4, |p| taken.push(p.to_vec()));
        assert_eq!(taken, [m1.to_vec(), m2.to_vec()]);
        assert_eq!(kept, 8);
        assert_eq!(&buf[..8], [q1, q2].concat());
    }

    #[test]
    fn a_short_last_quic_segment_stays_last_after_compaction() {
        let m = [0x90u8; 6];
        let q = [0x50u8; 6];
        let short = [0xd0u8, 9];
        let (mut buf, len) = gro(&[&m, &q, &short], 6);
        let mut n = 0;
        let kept = srtp::divert(&mut buf, len, 6, |_| n += 1);
        assert_eq!((n, kept), (1, 8));
        assert_eq!(&buf[..kept], [&q[..], &short[..]].concat());
    }

    #[test]
    fn an_all_media_buffer_is_left_empty_and_quic_alone_untouched() {
        let (mut buf, len) = gro(&[&[0x80, 1], &[0xbf, 2]], 2);
        let mut n = 0;
        assert_eq!(srtp::divert(&mut buf, len, 2, |_| n += 1), 0);
        assert_eq!(n, 2);
        let (mut buf, len) = gro(&[&[0x40, 1, 2], &[0xff, 3]], 3);
        let before = buf.clone();
        assert_eq!(srtp::divert(&mut buf, len, 3, |_| panic!("no media")), len);
        assert_eq!(buf, before);
    }

    #[test]
    fn odd_metas_never_panic() {
        // No GRO (stride = len), stride 0, a len past the buffer, empty.
        let mut buf = [0x80u8, 0, 0];
        assert_eq!(srtp::divert(&mut buf, 3, 3, |_| {}), 0);
        let mut buf = [0x40u8, 0, 0];
        assert_eq!(srtp::divert(&mut buf, 3, 0, |_| {}), 3);
        // A length past the buffer is cut to it: [0x40 0] kept, [0] dropped.
        assert_eq!(srtp::divert(&mut buf, 99, 2, |_| {}), 2);
        assert_eq!(srtp::divert(&mut [], 0, 1500, |_| {}), 0);
        // A first byte 0-63 (neither QUIC nor media) is dropped, unrouted.
        let mut buf = [0x10u8, 0];
        assert_eq!(srtp::divert(&mut buf, 2, 2, |_| panic!("not media")), 0);
    }

    #[test]
    fn gso_transmits_count_each_segment() {
        let contents = [0u8; 2500];
        let t = |segment_size| Transmit {
            destination: "127.0.0.1:1".parse().expect("an address"),
            ecn: None,
            contents: &contents,
            segment_size,
            src_ip: None,
        };
        assert_eq!(segments(&t(None)), 1);
        assert_eq!(segments(&t(Some(1200))), 3);
        assert_eq!(segments(&t(Some(2500))), 1);
        assert_eq!(segments(&t(Some(0))), 1);
    }
}
