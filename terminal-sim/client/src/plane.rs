//! The SRTP media plane of a client endpoint ([`Plane`]: which terminal owns
//! which SSRC, what the endpoint sent) and of one terminal ([`Channel`]:
//! its uplink `Sender`, its downlink `Receiver` and reception statistics).
//!
//! The endpoint's [`MediaSocket`](crate::socket::MediaSocket) hands every
//! received media datagram to [`Plane::deliver`], which routes it by SSRC to
//! the terminal's channel; the channel unprotects it and turns voice into the
//! QUIC DATAGRAM form the rest of the library reads ([`Channel::receive`]).
//! Packets of an unknown SSRC, forged, replayed or malformed ones are dropped
//! and counted; nothing a peer sends can panic.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use ptt_codec::srtp::{
    self, rtcp, voice, MasterKeys, Receiver, Role, Sender, EXPORTER_CONTEXT, EXPORTER_LABEL,
    EXPORTER_LEN, SRTCP_INDEX_LEN, TAG_LEN,
};
use ptt_codec::VoiceHeader;
use quinn::udp::Transmit;
use quinn::AsyncUdpSocket;
use tokio::sync::{mpsc, Notify};

/// Figures of one client endpoint (all its terminals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// UDP datagrams the endpoint sent: QUIC packets (each GSO segment
    /// counted) and media packets.
    pub sent_packets: u64,
    /// Media datagrams received (first byte 128-191), whoever they were for.
    pub media_received: u64,
    /// Media datagrams dropped because no terminal on the endpoint owns
    /// their SSRC (or they are too short to carry one).
    pub unknown_ssrc: u64,
}

/// The media plane of one endpoint: the channels of its terminals by SSRC,
/// and its counters.
pub(crate) struct Plane {
    /// Sends media (under the endpoint's own wrapper, so an emulated delay
    /// or loss applies to media as to QUIC).
    socket: Arc<dyn AsyncUdpSocket>,
    channels: RwLock<HashMap<u32, Arc<Channel>>>,
    /// Whether terminals on this endpoint offer SRTP in `Hello`.
    offer: AtomicBool,
    sent: AtomicU64,
    media_received: AtomicU64,
    unknown_ssrc: AtomicU64,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane").finish_non_exhaustive()
    }
}

/// Every live endpoint's plane, by the endpoint's local address: a
/// `quinn::Endpoint` cannot carry it, and the public API takes one.
static PLANES: Mutex<Vec<(SocketAddr, Weak<Plane>)>> = Mutex::new(Vec::new());

impl Plane {
    /// A plane sending through `socket`, offering SRTP.
    pub(crate) fn new(socket: Arc<dyn AsyncUdpSocket>) -> Arc<Plane> {
        Arc::new(Plane {
            socket,
            channels: RwLock::new(HashMap::new()),
            offer: AtomicBool::new(true),
            sent: AtomicU64::new(0),
            media_received: AtomicU64::new(0),
            unknown_ssrc: AtomicU64::new(0),
        })
    }

    /// Makes `plane` the one of the endpoint bound to `addr` (replacing a
    /// dead one's). Call once the endpoint exists.
    pub(crate) fn register(addr: SocketAddr, plane: &Arc<Plane>) {
        let mut planes = PLANES.lock().unwrap_or_else(|e| e.into_inner());
        planes.retain(|(a, p)| *a != addr && p.strong_count() > 0);
        planes.push((addr, Arc::downgrade(plane)));
    }

    /// The plane of `endpoint`, if it was made by this library.
    pub(crate) fn of(endpoint: &quinn::Endpoint) -> Option<Arc<Plane>> {
        let addr = endpoint.local_addr().ok()?;
        let planes = PLANES.lock().unwrap_or_else(|e| e.into_inner());
        planes
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, p)| p.upgrade())
    }

    /// Whether terminals connecting on this endpoint offer SRTP.
    pub(crate) fn offers(&self) -> bool {
        self.offer.load(Ordering::Relaxed)
    }

    pub(crate) fn set_offer(&self, srtp: bool) {
        self.offer.store(srtp, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        EndpointStats {
            sent_packets: self.sent.load(Ordering::Relaxed),
            media_received: self.media_received.load(Ordering::Relaxed),
            unknown_ssrc: self.unknown_ssrc.load(Ordering::Relaxed),
        }
    }

    /// `n` datagrams went out.
    pub(crate) fn count_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Routes `channel`'s packets to it from now on.
    pub(crate) fn add(&self, channel: Arc<Channel>) {
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        channels.insert(channel.ssrc, channel);
    }

    /// Stops routing `channel`'s SSRC (its terminal's connection ended),
    /// unless a newer connection's channel has it now.
    pub(crate) fn remove(&self, channel: &Arc<Channel>) {
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        if channels
            .get(&channel.ssrc)
            .is_some_and(|c| Arc::ptr_eq(c, channel))
        {
            channels.remove(&channel.ssrc);
        }
    }

    /// One received media datagram, from `from`: to the channel of its
    /// SSRC (RTP: bytes 8..12; RTCP: the sender SSRC, bytes 4..8), else
    /// dropped and counted.
    pub(crate) fn deliver(&self, packet: &mut [u8], from: SocketAddr) {
        self.media_received.fetch_add(1, Ordering::Relaxed);
        let at = if srtp::is_rtcp(packet) { 4 } else { 8 };
        let channel = packet
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .and_then(|ssrc| {
                let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
                channels.get(&ssrc).cloned()
            });
        match channel {
            Some(channel) => channel.receive(packet, from),
            None => {
                self.unknown_ssrc.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends one media datagram to `to`; a full socket buffer drops it (it
    /// is voice: late is as bad as lost).
    pub(crate) fn send(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: packet,
            segment_size: None,
            src_ip: None,
        })?;
        self.count_sent(1);
        Ok(())
    }
}

/// Counters of one terminal's media plane; see [`Channel::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Voice frames sent as SRTP.
    pub srtp_sent: u64,
    /// Voice frames received as SRTP, delivered.
    pub srtp_received: u64,
    /// SRTCP receiver reports sent (probes and keep-alives).
    pub rtcp_sent: u64,
    /// SRTCP packets from the gateway that authenticated.
    pub rtcp_received: u64,
    /// Media packets refused as replayed or too old for the replay window.
    pub replayed: u64,
    /// Media packets that did not authenticate (forged, corrupted, another
    /// key) or were for another stream.
    pub unauthentic: u64,
    /// Media packets that were not a well-formed packet, or authenticated
    /// but carried no voice frame.
    pub malformed: u64,
    /// Media packets that could not be protected or sent.
    pub send_failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    srtp_sent: AtomicU64,
    srtp_received: AtomicU64,
    rtcp_sent: AtomicU64,
    rtcp_received: AtomicU64,
    replayed: AtomicU64,
    unauthentic: AtomicU64,
    malformed: AtomicU64,
    send_failed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The uplink stream: the sender and the RTP sequence and clock.
#[derive(Debug)]
struct Uplink {
    sender: Sender,
    /// Sequence number of the next packet.
    sequence: u16,
    /// RTP timestamp at `epoch` (random, as RFC 3550 asks).
    clock_base: u32,
    /// The burst being sent: group, burst, and the timestamp of its frame 0.
    burst: Option<(u32, u16, u32)>,
    buf: Vec<u8>,
}

/// The downlink stream: the receiver and what it heard.
#[derive(Debug)]
struct Downlink {
    receiver: Receiver,
    reception: rtcp::Reception,
}

/// One terminal's SRTP streams (one SSRC, a stream per direction), shared
/// by the endpoint's socket (receiving), the terminal (sending voice) and
/// its path check task (sending reports).
#[derive(Debug)]
pub(crate) struct Channel {
    ssrc: u32,
    /// Start of the terminal's 48 kHz media clock and of arrival times.
    epoch: Instant,
    up: Mutex<Uplink>,
    down: Mutex<Downlink>,
    /// Voice frames received, in the QUIC DATAGRAM form.
    voice: mpsc::UnboundedSender<Bytes>,
    /// Woken by every SRTCP packet from the gateway that authenticated.
    pub(crate) answered: Notify,
    counters: Counters,
}

impl Channel {
    /// The channel of a connection whose `Welcome` answered `ssrc`, keyed
    /// from its TLS exporter. Returns it and the receiving end of its voice.
    pub(crate) fn open(
        conn: &quinn::Connection,
        ssrc: u32,
    ) -> Result<(Arc<Channel>, mpsc::UnboundedReceiver<Bytes>), crate::Error> {
        let mut exported = [0u8; EXPORTER_LEN];
        conn.export_keying_material(&mut exported, EXPORTER_LABEL, EXPORTER_CONTEXT)
            .map_err(|_| crate::Error::Tls("no TLS exporter for the media keys".into()))?;
        let keys = MasterKeys::from_exporter(&exported)
            .map_err(|e| crate::Error::Tls(format!("media keys: {e}")))?;
        Ok(Channel::with_keys(
            &keys,
            ssrc,
            rand::random::<u16>() & 0x7fff,
        ))
    }

    /// The channel for `ssrc` under `keys`, the uplink's first packet
    /// numbered `first` (below 32,768).
    pub(crate) fn with_keys(
        keys: &MasterKeys,
        ssrc: u32,
        first: u16,
    ) -> (Arc<Channel>, mpsc::UnboundedReceiver<Bytes>) {
        let (voice, rx) = mpsc::unbounded_channel();
        let channel = Channel {
            ssrc,
            epoch: Instant::now(),
            up: Mutex::new(Uplink {
                sender: Sender::new(&keys.session(Role::Client.sending()), ssrc),
                sequence: first & 0x7fff,
                clock_base: rand::random(),
                burst: None,
                buf: vec![0; voice::MAX_PACKET + TAG_LEN],
            }),
            down: Mutex::new(Downlink {
                receiver: Receiver::new(&keys.session(Role::Client.receiving()), ssrc),
                reception: rtcp::Reception::default(),
            }),
            voice,
            answered: Notify::new(),
            counters: Counters::default(),
        };
        (Arc::new(channel), rx)
    }

    pub(crate) fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub(crate) fn stats(&self) -> MediaStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MediaStats {
            srtp_sent: get(&c.srtp_sent),
            srtp_received: get(&c.srtp_received),
            rtcp_sent: get(&c.rtcp_sent),
            rtcp_received: get(&c.rtcp_received),
            replayed: get(&c.replayed),
            unauthentic: get(&c.unauthentic),
            malformed: get(&c.malformed),
            send_failed: get(&c.send_failed),
        }
    }

    /// Milliseconds since the epoch on the 48 kHz clock, wrapping.
    fn clock(&self, now: Instant) -> u32 {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        (ms * u64::from(voice::CLOCK_RATE / 1000)) as u32
    }

    fn count_error(&self, e: srtp::Error) {
        let c = &self.counters;
        match e {
            srtp::Error::Replayed | srtp::Error::TooOld => bump(&c.replayed),
            srtp::Error::AuthFailed | srtp::Error::WrongSsrc => bump(&c.unauthentic),
            _ => bump(&c.malformed),
        }
    }

    /// A media datagram for this channel's SSRC, from `_from`: an SRTCP
    /// answer wakes the path check; SRTP voice goes to the voice queue as a
    /// DATAGRAM-form frame. Anything that does not authenticate, is
    /// replayed or is not voice is counted and dropped.
    pub(crate) fn receive(&self, packet: &mut [u8], _from: SocketAddr) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if srtp::is_rtcp(packet) {
            match down.receiver.unprotect_rtcp(packet) {
                Ok(_) => {
                    bump(&self.counters.rtcp_received);
                    self.answered.notify_one();
                }
                Err(e) => self.count_error(e),
            }
            return;
        }
        let unprotected = match down.receiver.unprotect(packet) {
            Ok(u) => u,
            Err(e) => return self.count_error(e),
        };
        let arrival = self.clock(Instant::now());
        down.reception
            .on_packet(unprotected.index, unprotected.header.timestamp, arrival);
        drop(down);
        match voice::read(&unprotected, packet) {
            Ok((header, opus)) => {
                bump(&self.counters.srtp_received);
                // The terminal may be gone already; then nobody listens.
                let _ = self.voice.send(header.to_datagram(opus));
            }
            Err(e) => self.count_error(e),
        }
    }

    /// Sends one voice frame (the uplink's speaker field is never sent) as
    /// SRTP to `to` through `plane`. The RTP timestamp is the terminal's
    /// media clock at the burst's first frame plus 960 per frame.
    pub(crate) fn send_voice(
        &self,
        plane: &Plane,
        to: SocketAddr,
        frame: &VoiceHeader,
        opus: &[u8],
    ) -> Result<(), crate::Error> {
        let now = self.clock(Instant::now());
        let mut up = self.up.lock().unwrap_or_else(|e| e.into_inner());
        let up = &mut *up;
        let key = (frame.group.0, frame.burst);
        let start = match up.burst {
            Some((g, b, start)) if (g, b) == key && frame.seq != 0 => start,
            _ => {
                let start = up
                    .clock_base
                    .wrapping_add(now)
                    .wrapping_sub(u32::from(frame.seq) * voice::TICKS_PER_FRAME);
                up.burst = Some((key.0, key.1, start));
                start
            }
        };
        let rtp = voice::Rtp {
            ssrc: self.ssrc,
            sequence: up.sequence,
            timestamp: start.wrapping_add(u32::from(frame.seq) * voice::TICKS_PER_FRAME),
        };
        let sealed = voice::write(frame, rtp, None, opus, &mut up.buf)
            .and_then(|len| up.sender.protect(&mut up.buf, len));
        let len = match sealed {
            Ok(len) => len,
            Err(e) => {
                bump(&self.counters.send_failed);
                return Err(crate::Error::Media(e));
            }
        };
        up.sequence = up.sequence.wrapping_add(1);
        match plane.send(&up.buf[..len], to) {
            Ok(()) => {
                bump(&self.counters.srtp_sent);
                Ok(())
            }
            Err(e) => {
                bump(&self.counters.send_failed);
                Err(crate::Error::Io(e))
            }
        }
    }

    /// Sends one SRTCP receiver report to `to` through `plane`, with the
    /// reception block of the downlink if anything was heard.
    pub(crate) fn send_report(&self, plane: &Plane, to: SocketAddr) -> Result<(), crate::Error> {
        let block = {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            down.reception.report(self.ssrc)
        };
        let mut buf = [0u8; 8 + rtcp::BLOCK_LEN + TAG_LEN + SRTCP_INDEX_LEN];
        let blocks: &[rtcp::ReportBlock] = match &block {
            Some(b) => std::slice::from_ref(b),
            None => &[],
        };
        let sealed = rtcp::write_receiver_report(self.ssrc, blocks, &mut buf).and_then(|len| {
            let mut up = self.up.lock().unwrap_or_else(|e| e.into_inner());
            up.sender.protect_rtcp(&mut buf, len)
        });
        let len = match sealed {
            Ok(len) => len,
            Err(e) => {
                bump(&self.counters.send_failed);
                return Err(crate::Error::Media(e));
            }
        };
        match plane.send(&buf[..len], to) {
            Ok(()) => {
                bump(&self.counters.rtcp_sent);
                Ok(())
            }
            Err(e) => {
                bump(&self.counters.send_failed);
                Err(crate::Error::Io(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptt_codec::srtp::{SharedSender, TAG_LEN};
    use ptt_codec::GroupId;

    /// Keys whose four parts all differ (so an uplink packet does not
    /// authenticate as a downlink one).
    fn keys(seed: u8) -> MasterKeys {
        let exported: Vec<u8> = (0..EXPORTER_LEN as u8).map(|i| seed ^ i).collect();
        MasterKeys::from_exporter(&exported).expect("56 bytes")
    }

    /// A plane on a loopback socket, ready to send. Call inside a tokio
    /// runtime.
    async fn plane() -> Arc<Plane> {
        use quinn::Runtime;
        let socket = quinn::TokioRuntime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .expect("wrap");
        // The reactor learns the socket is writable on its first turn.
        let mut poller = socket.clone().create_io_poller();
        std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .expect("writable");
        Plane::new(socket)
    }

    /// The gateway's downlink packet `index` to `ssrc` carrying a frame of
    /// `speaker`, protected with `gateway`.
    fn downlink(gateway: &SharedSender, index: u64, speaker: u32, opus: &[u8]) -> Vec<u8> {
        let frame = VoiceHeader {
            group: GroupId(7),
            speaker: 0,
            burst: 3,
            seq: index as u16,
            flags: 0,
        };
        let rtp = voice::Rtp {
            ssrc: gateway.ssrc(),
            sequence: SharedSender::sequence_of(index),
            timestamp: 960 * index as u32,
        };
        let mut buf = vec![0u8; voice::MAX_PACKET + TAG_LEN];
        let len = voice::write(&frame, rtp, Some(speaker), opus, &mut buf).expect("written");
        let len = gateway.seal(index, &mut buf, len).expect("sealed");
        buf.truncate(len);
        buf
    }

    #[tokio::test]
    async fn downlink_voice_is_routed_by_ssrc_and_turned_into_a_datagram() {
        let plane = plane().await;
        let k = keys(1);
        let (a, mut a_voice) = Channel::with_keys(&k, 11, 5);
        let (b, mut b_voice) = Channel::with_keys(&keys(2), 22, 5);
        plane.add(a.clone());
        plane.add(b.clone());
        let gateway = SharedSender::new(&k.session(Role::Server.sending()), 11, 100);
        let from = "127.0.0.1:4433".parse().expect("addr");
        let index = gateway.next().expect("index");
        let mut packet = downlink(&gateway, index, 501, b"opus");
        plane.deliver(&mut packet, from);
        let datagram = a_voice.try_recv().expect("delivered to 11");
        let (header, opus) = VoiceHeader::decode(&datagram).expect("a voice datagram");
        assert_eq!(
            (header.speaker, header.group, header.burst),
            (501, GroupId(7), 3)
        );
        assert_eq!(opus, b"opus");
        assert!(b_voice.try_recv().is_err(), "not to 22");
        assert_eq!(a.stats().srtp_received, 1);

        // An SSRC nobody on the endpoint owns; a packet too short for one.
        let other = SharedSender::new(&k.session(Role::Server.sending()), 33, 0);
        let index = other.next().expect("index");
        plane.deliver(&mut downlink(&other, index, 1, b"x"), from);
        plane.deliver(&mut [0x80, 111, 0, 1, 0, 0], from);
        plane.deliver(&mut [0x80, 201, 0], from);
        let stats = plane.stats();
        assert_eq!((stats.media_received, stats.unknown_ssrc), (4, 3));

        // Removing another channel of the same SSRC changes nothing; once
        // removed, its packets are unknown too.
        let (stale, _) = Channel::with_keys(&k, 11, 5);
        plane.remove(&stale);
        let index = gateway.next().expect("index");
        plane.deliver(&mut downlink(&gateway, index, 501, b"opus"), from);
        assert!(a_voice.try_recv().is_ok(), "still routed");
        plane.remove(&a);
        let index = gateway.next().expect("index");
        plane.deliver(&mut downlink(&gateway, index, 501, b"opus"), from);
        assert_eq!(plane.stats().unknown_ssrc, 4);
        assert!(a_voice.try_recv().is_err());
    }

    #[tokio::test]
    async fn hostile_packets_are_counted_never_delivered_never_panic() {
        let plane = plane().await;
        let k = keys(1);
        let (a, mut voice_rx) = Channel::with_keys(&k, 11, 5);
        plane.add(a.clone());
        let from = "127.0.0.1:4433".parse().expect("addr");
        let gateway = SharedSender::new(&k.session(Role::Server.sending()), 11, 0);
        let good = downlink(&gateway, gateway.next().expect("index"), 501, b"voice");

        // Replayed: the first copy is delivered, the second counted.
        plane.deliver(&mut good.clone(), from);
        plane.deliver(&mut good.clone(), from);
        assert!(voice_rx.try_recv().is_ok());
        assert!(voice_rx.try_recv().is_err());
        assert_eq!(a.stats().replayed, 1);

        // Forged: a flipped payload byte, a flipped tag byte.
        let next = downlink(&gateway, gateway.next().expect("index"), 501, b"voice");
        for at in [next.len() - TAG_LEN - 1, next.len() - 1] {
            let mut forged = next.clone();
            forged[at] ^= 1;
            plane.deliver(&mut forged, from);
        }
        // Another key: the same SSRC, another connection's keys.
        let stranger = SharedSender::new(&keys(9).session(Role::Server.sending()), 11, 5);
        plane.deliver(
            &mut downlink(&stranger, stranger.next().expect("index"), 666, b"x"),
            from,
        );
        // An uplink packet reflected back (the client_write keys).
        let mut reflected = next.clone();
        let mut s = Sender::new(&k.session(Role::Client.sending()), 11);
        let rtp = voice::Rtp {
            ssrc: 11,
            sequence: 9,
            timestamp: 0,
        };
        let frame = VoiceHeader {
            group: GroupId(7),
            speaker: 0,
            burst: 3,
            seq: 9,
            flags: 0,
        };
        reflected.resize(voice::MAX_PACKET + TAG_LEN, 0);
        let len = voice::write(&frame, rtp, None, b"x", &mut reflected).expect("written");
        let len = s.protect(&mut reflected, len).expect("sealed");
        plane.deliver(&mut reflected[..len], from);
        assert_eq!(a.stats().unauthentic, 4, "{:?}", a.stats());

        // Truncated at every length, garbage SRTCP: counted, never delivered.
        for cut in 0..next.len() {
            let mut t = next[..cut].to_vec();
            if t.len() >= 12 {
                plane.deliver(&mut t, from);
            }
        }
        let mut rtcp = [0x80u8, 201, 0, 1, 0, 0, 0, 11, 1, 2, 3];
        plane.deliver(&mut rtcp, from);
        let mut rtcp = [0x80u8, 201, 0, 1, 0, 0, 0, 11];
        plane.deliver(&mut rtcp, from);
        // A whole-length SRTCP packet with a wrong tag.
        let mut rtcp = [0u8; 8 + TAG_LEN + 4];
        rtcp[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 11]);
        rtcp[8 + TAG_LEN] = 0x80;
        plane.deliver(&mut rtcp, from);
        assert!(voice_rx.try_recv().is_err(), "nothing hostile delivered");
        let s = a.stats();
        assert!(s.malformed + s.unauthentic > 4, "{s:?}");
        assert_eq!(s.rtcp_received, 0);

        // The genuine next packet still gets through afterwards.
        plane.deliver(&mut next.clone(), from);
        assert!(voice_rx.try_recv().is_ok());
    }

    #[tokio::test]
    async fn uplink_voice_and_reports_reach_the_gateway_in_order() {
        let plane = plane().await;
        let k = keys(4);
        let (channel, _rx) = Channel::with_keys(&k, 77, 32_767);
        let mut gateway = Receiver::new(&k.session(Role::Server.receiving()), 77);
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let to_gateway = receiver.local_addr().expect("addr");
        let frame = |seq: u16| VoiceHeader {
            group: GroupId(5),
            speaker: 0,
            burst: 9,
            seq,
            flags: 0,
        };
        let mut stamps = Vec::new();
        for seq in 0..3 {
            channel
                .send_voice(&plane, to_gateway, &frame(seq), b"opus")
                .expect("sent");
            let mut buf = [0u8; 1500];
            let len = receiver.recv(&mut buf).expect("received");
            let got = gateway.unprotect(&mut buf[..len]).expect("authentic");
            assert_eq!(got.header.sequence, 32_767u16.wrapping_add(seq));
            stamps.push(got.header.timestamp);
            let (h, opus) = voice::read(&got, &buf[..len]).expect("voice");
            assert_eq!((h.seq, h.speaker, opus), (seq, 0, &b"opus"[..]));
        }
        assert_eq!(stamps[1].wrapping_sub(stamps[0]), 960);
        assert_eq!(stamps[2].wrapping_sub(stamps[1]), 960);

        channel.send_report(&plane, to_gateway).expect("sent");
        let mut buf = [0u8; 1500];
        let len = receiver.recv(&mut buf).expect("received");
        assert!(srtp::is_rtcp(&buf[..len]));
        let rr = gateway.unprotect_rtcp(&mut buf[..len]).expect("authentic");
        let packet = rtcp::packets(&buf[..rr])
            .next()
            .expect("one")
            .expect("valid");
        let report = rtcp::ReceiverReport::parse(&packet).expect("an RR");
        assert_eq!(report.reporter, 77);
        assert_eq!(report.blocks().count(), 0, "nothing heard yet");
        let s = channel.stats();
        assert_eq!((s.srtp_sent, s.rtcp_sent), (3, 1));
        assert_eq!(plane.stats().sent_packets, 4);
    }
}
