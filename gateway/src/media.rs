//! The voice media plane's per-terminal state: SRTP beside QUIC on the
//! gateway's port (docs/PROTOCOL.md, "Media plane: SRTP").
//!
//! A terminal that offered SRTP in its `Hello` and was answered gets a
//! [`Route`]: its SSRC, the keys both ends exported from the QUIC
//! connection, the address its media goes to, and whether it receives
//! SRTP now. The [`Table`] finds a route by the SSRC of a packet that
//! arrives (`session::media` reads those); the relay
//! ([`crate::fanout::relay`]) finds a listener's route on its link.
//!
//! Per listener and frame, sending takes no lock, no task and no
//! allocation: the next packet index from an atomic counter, one
//! AES-GCM seal into a slot of the thread's outgoing batch
//! ([`crate::net::queue`]), and the batch goes to the socket in one
//! `sendmmsg`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use ptt_codec::srtp::{self, rtcp, voice, MasterKeys, Role, SharedSender};
use ptt_codec::{TerminalId, VoiceHeader};
use ptt_gateway_core::fanout::RateLimit;

use crate::net::{self, MediaPort};

/// Where a terminal with a route receives voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Answered, but no packet of its has authenticated yet: its path is
    /// unproven, so it still gets QUIC DATAGRAMs.
    Pending = 0,
    /// SRTP to its latched address.
    Srtp = 1,
    /// QUIC DATAGRAMs: it asked to fall back (`MediaMode { srtp: false }`).
    Datagram = 2,
}

impl Mode {
    /// How the admin API and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pending => "srtp-pending",
            Mode::Srtp => "srtp",
            Mode::Datagram => "datagram-fallback",
        }
    }
}

/// One terminal's media plane.
pub struct Route {
    terminal: TerminalId,
    ssrc: u32,
    /// The receiving end of its uplink, with its reception figures and its
    /// rate limit; touched only by its own packets, on the network thread.
    uplink: Mutex<Uplink>,
    /// The sending end of its downlink: one stream for every group it hears.
    downlink: SharedSender,
    /// Where its media goes: the connection's address until one of its
    /// packets authenticates, then the address that packet came from.
    address: ArcSwap<SocketAddr>,
    /// Whether a packet of its has authenticated (its path is proven).
    proven: AtomicBool,
    mode: AtomicU8,
    /// The start of its downlink's media clock.
    epoch: Instant,
    port: Arc<MediaPort>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("terminal", &self.terminal)
            .field("ssrc", &self.ssrc)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

/// A route's uplink state.
pub(crate) struct Uplink {
    pub(crate) receiver: srtp::Receiver,
    pub(crate) reception: rtcp::Reception,
    /// Media packets (voice and RTCP) it may send: the same bound as its
    /// voice datagrams (`session.voice_rate`, `session.voice_burst`).
    pub(crate) rate: RateLimit,
}

impl Route {
    /// The terminal this route belongs to.
    pub fn terminal(&self) -> TerminalId {
        self.terminal
    }

    /// The SSRC of both its streams (the answer's).
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Where it receives voice now.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::Srtp,
            2 => Mode::Datagram,
            _ => Mode::Pending,
        }
    }

    /// Whether the relay sends it SRTP.
    pub fn receives_srtp(&self) -> bool {
        self.mode() == Mode::Srtp
    }

    /// Where its media goes.
    pub fn address(&self) -> SocketAddr {
        **self.address.load()
    }

    /// The terminal asked for SRTP (`true`) or QUIC DATAGRAMs. SRTP is
    /// taken up only once its path is proven; until then it stays pending.
    pub fn set_mode(&self, srtp: bool) {
        let mode = match (srtp, self.proven.load(Ordering::Relaxed)) {
            (false, _) => Mode::Datagram,
            (true, true) => Mode::Srtp,
            (true, false) => Mode::Pending,
        };
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// One of its packets authenticated, from `from`: its path is proven
    /// (a pending route turns to SRTP) and its media moves to `from` if it
    /// came from elsewhere (authenticated latching: only a packet that
    /// verified can move it). Returns whether the address moved.
    pub(crate) fn authenticated(&self, from: SocketAddr) -> bool {
        if !self.proven.swap(true, Ordering::Relaxed) {
            let _ = self.mode.compare_exchange(
                Mode::Pending as u8,
                Mode::Srtp as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if **self.address.load() == from {
            return false;
        }
        self.address.store(Arc::new(from));
        true
    }

    /// Its uplink state, for a packet of its that arrived.
    pub(crate) fn uplink(&self) -> std::sync::MutexGuard<'_, Uplink> {
        // A panic while holding it (none is possible in the code that
        // takes it) would only have left figures half-updated.
        self.uplink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The route's 48 kHz media clock at `at`: the downlink's timestamps,
    /// and the uplink's arrival times for its jitter.
    pub(crate) fn clock_at(&self, at: Instant) -> u32 {
        let micros = at.saturating_duration_since(self.epoch).as_micros() as u64;
        // Wraps after 24.8 hours, as RTP timestamps do.
        (micros * u64::from(voice::CLOCK_RATE) / 1_000_000) as u32
    }

    /// Queues voice frame `frame` (speaker stamped) with its Opus packet
    /// to this terminal as the next packet of its downlink; call
    /// [`net::flush`] once the frame went to every listener. Returns false
    /// if nothing could be queued (its index space is spent).
    pub fn send_voice(&self, frame: &VoiceHeader, opus: &[u8]) -> bool {
        let Some(index) = self.downlink.next() else {
            return false;
        };
        let rtp = voice::Rtp {
            ssrc: self.ssrc,
            sequence: SharedSender::sequence_of(index),
            timestamp: self.clock_at(Instant::now()),
        };
        net::queue(&self.port, self.address(), |slot| {
            let len = voice::write(frame, rtp, Some(frame.speaker), opus, slot).ok()?;
            self.downlink.seal(index, slot, len).ok()
        })
    }

    /// Sends one SRTCP receiver report about its uplink to `to` (the
    /// answer to one of its own that authenticated), at once.
    pub(crate) fn answer(&self, to: SocketAddr, block: Option<rtcp::ReportBlock>) -> bool {
        let queued = net::queue(&self.port, to, |slot| {
            let blocks: &[rtcp::ReportBlock] = match &block {
                Some(b) => std::slice::from_ref(b),
                None => &[],
            };
            let len = rtcp::write_receiver_report(self.ssrc, blocks, slot).ok()?;
            self.downlink.protect_rtcp(slot, len).ok()
        });
        net::flush();
        queued
    }
}

/// Every route of the gateway, by SSRC.
#[derive(Debug, Default)]
pub struct Table {
    routes: DashMap<u32, Arc<Route>>,
    port: OnceLock<Arc<MediaPort>>,
}

impl Table {
    /// Sets the QUIC port's media side; until then no terminal is answered
    /// SRTP. Once.
    pub(crate) fn set_port(&self, port: Arc<MediaPort>) {
        let _ = self.port.set(port);
    }

    /// Whether SRTP can be answered (the port's media side is set).
    pub fn ready(&self) -> bool {
        self.port.get().is_some()
    }

    /// Opens a route for `terminal` with the 56 bytes its connection's TLS
    /// exporter gave, its media going to `address` until a packet of its
    /// authenticates; `rate` bounds its media packets. Picks a fresh random
    /// SSRC. `None` if the port is not ready or the exporter output is not
    /// 56 bytes.
    pub fn open(
        &self,
        terminal: TerminalId,
        exported: &[u8],
        address: SocketAddr,
        rate: RateLimit,
    ) -> Option<Arc<Route>> {
        let port = self.port.get()?.clone();
        let keys = MasterKeys::from_exporter(exported).ok()?;
        loop {
            let ssrc: u32 = rand::random();
            if ssrc == 0 {
                continue;
            }
            let dashmap::Entry::Vacant(slot) = self.routes.entry(ssrc) else {
                continue;
            };
            let route = Arc::new(Route {
                terminal,
                ssrc,
                uplink: Mutex::new(Uplink {
                    receiver: srtp::Receiver::new(&keys.session(Role::Server.receiving()), ssrc),
                    reception: rtcp::Reception::default(),
                    rate,
                }),
                downlink: SharedSender::new(
                    &keys.session(Role::Server.sending()),
                    ssrc,
                    rand::random::<u16>() & 0x7fff,
                ),
                address: ArcSwap::from_pointee(address),
                proven: AtomicBool::new(false),
                mode: AtomicU8::new(Mode::Pending as u8),
                epoch: Instant::now(),
                port,
            });
            slot.insert(route.clone());
            return Some(route);
        }
    }

    /// The route whose SSRC is `ssrc`.
    pub fn get(&self, ssrc: u32) -> Option<Arc<Route>> {
        self.routes.get(&ssrc).map(|r| r.clone())
    }

    /// Forgets `route` (its session ended).
    pub fn close(&self, route: &Arc<Route>) {
        self.routes
            .remove_if(&route.ssrc, |_, r| Arc::ptr_eq(r, route));
    }

    /// Routes open now.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is open.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use ptt_codec::srtp::{Receiver, Sender};
    use ptt_codec::GroupId;

    fn table() -> (Table, std::net::UdpSocket) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let table = Table::default();
        assert!(!table.ready());
        table.set_port(MediaPort::new(&socket, Arc::new(Metrics::default())).unwrap());
        assert!(table.ready());
        (table, socket)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_route_turns_to_srtp_only_once_a_packet_of_its_authenticated() {
        let (table, _socket) = table();
        let r = table
            .open(TerminalId(7), &[1; 56], addr(1000), RateLimit::new(150, 50))
            .unwrap();
        assert_eq!(r.mode(), Mode::Pending);
        assert_eq!(r.address(), addr(1000));
        r.set_mode(true);
        assert_eq!(r.mode(), Mode::Pending, "asking is not proving");
        // The first authenticated packet, from the media socket: latched.
        assert!(r.authenticated(addr(2000)));
        assert_eq!((r.mode(), r.address()), (Mode::Srtp, addr(2000)));
        assert!(!r.authenticated(addr(2000)), "same address, no move");
        // Fallback and back.
        r.set_mode(false);
        assert_eq!(r.mode(), Mode::Datagram);
        assert!(!r.receives_srtp());
        assert!(r.authenticated(addr(3000)));
        assert_eq!(
            r.mode(),
            Mode::Datagram,
            "a packet does not undo a fallback"
        );
        r.set_mode(true);
        assert_eq!((r.mode(), r.address()), (Mode::Srtp, addr(3000)));
    }

    #[test]
    fn ssrcs_are_unique_and_a_closed_route_is_forgotten() {
        let (table, _socket) = table();
        let routes: Vec<_> = (0..200)
            .map(|i| {
                table
                    .open(TerminalId(i), &[2; 56], addr(1), RateLimit::new(1, 1))
                    .unwrap()
            })
            .collect();
        assert_eq!(table.len(), 200);
        assert!(routes.iter().all(|r| r.ssrc() != 0));
        let r = &routes[5];
        assert!(Arc::ptr_eq(&table.get(r.ssrc()).unwrap(), r));
        table.close(r);
        assert!(table.get(r.ssrc()).is_none());
        assert_eq!(table.len(), 199);
        assert!(
            table
                .open(TerminalId(1), &[0; 55], addr(1), RateLimit::new(1, 1))
                .is_none(),
            "an exporter output of the wrong length"
        );
    }

    #[test]
    fn voice_sent_to_a_route_arrives_sealed_for_it_alone() {
        let (table, _socket) = table();
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let exported = [3u8; 56];
        let r = table
            .open(
                TerminalId(9),
                &exported,
                listener.local_addr().unwrap(),
                RateLimit::new(1, 1),
            )
            .unwrap();
        let keys = MasterKeys::from_exporter(&exported).unwrap();
        let mut terminal = Receiver::new(&keys.session(Role::Client.receiving()), r.ssrc());
        let frame = VoiceHeader {
            group: GroupId(42),
            speaker: 1002,
            burst: 5,
            seq: 0,
            flags: 0,
        };
        for seq in 0..3 {
            assert!(r.send_voice(&VoiceHeader { seq, ..frame }, b"opus"));
        }
        net::flush();
        let mut buf = [0u8; 1500];
        for seq in 0..3 {
            let n = listener.recv(&mut buf).unwrap();
            let got = terminal
                .unprotect(&mut buf[..n])
                .expect("sealed with its keys");
            let (h, opus) = voice::read(&got, &buf[..n]).unwrap();
            assert_eq!((h.speaker, h.seq, opus), (1002, seq, &b"opus"[..]));
        }
        // Another terminal's keys do not open it.
        assert!(r.send_voice(&frame, b"opus"));
        net::flush();
        let n = listener.recv(&mut buf).unwrap();
        let mut other = Receiver::new(
            &MasterKeys::from_exporter(&[4; 56])
                .unwrap()
                .session(Role::Client.receiving()),
            r.ssrc(),
        );
        assert_eq!(other.unprotect(&mut buf[..n]), Err(srtp::Error::AuthFailed));
        // Its uplink takes what the terminal seals.
        let mut up = Sender::new(&keys.session(Role::Client.sending()), r.ssrc());
        let len = voice::write(
            &frame,
            voice::Rtp {
                ssrc: r.ssrc(),
                sequence: 1,
                timestamp: 0,
            },
            None,
            b"x",
            &mut buf,
        )
        .unwrap();
        let len = up.protect(&mut buf, len).unwrap();
        assert!(r.uplink().receiver.unprotect(&mut buf[..len]).is_ok());
    }
}
