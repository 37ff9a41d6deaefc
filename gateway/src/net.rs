//! The network thread: one OS thread that carries every packet.
//!
//! quinn drives each connection with a task of its own (the connection
//! driver) plus one task for the endpoint (the socket). On tokio's
//! multi-threaded runtime a relayed voice frame then costs, per receiver, a
//! wake-up of that receiver's driver which is as likely as not on the other
//! worker: the waking worker writes the other's eventfd, the other leaves
//! `epoll_wait`, steals the task, and parks again when the burst is done.
//! A profile of the voice path at 100 groups showed a quarter of the
//! gateway's samples in that traffic (22 % `finish_task_switch`, 4 %
//! `eventfd_write`), more than quinn's packet building and encryption
//! together.
//!
//! So the endpoint driver, every connection driver and every voice relay
//! loop run on one current-thread tokio runtime on a thread of their own:
//! a frame is read, admitted, handed to its receivers' connections, and
//! their drivers build and send the packets, all on one thread and without
//! a single cross-thread wake-up. The rest of the gateway (control streams,
//! alerts, the database) stays on the multi-threaded runtime, and touches
//! connections through quinn's handles, which are thread-safe.
//!
//! This is the "runtime layout" lever of the performance model. It removes
//! the cross-thread part of quinn's scheduling cost, not the per-connection
//! part: each delivery and each ACK still costs a driver task poll, a timer
//! reset and a channel hop, which only a driver owning every connection over
//! `quinn-proto` would remove. At the city's voice peak that layer is about
//! 28 % of the gateway's CPU per delivered frame, `quinn-proto` and its
//! cryptography 34 %, and the kernel 31 % (BENCHMARKS.md, "the floor under
//! the CPU target"). One thread bounds the packet path at one core; going past it
//! means several endpoints on one port (`SO_REUSEPORT`), which needs
//! connection-ID-aware routing for migration and belongs to the cluster.
//!
//! The thread's socket also ends the gateway's internal latency figure:
//! [`follow`] takes a relayed frame and the receivers it was queued for,
//! and the socket records the time from the frame's read to the last of
//! their packets handed to the kernel. One thread makes that a
//! thread-local with no lock; the voice loops follow one frame in 64.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, RelayLatency};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A handle to the network thread. Cheap to clone. The thread stops, and
/// drops what still runs on it, when the last handle is dropped.
#[derive(Clone)]
pub struct Thread {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    /// Dropped with the last handle, which ends the thread's `block_on`.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("net::Thread").finish_non_exhaustive()
    }
}

impl Thread {
    /// Starts the thread, named `name` (shown by `top -H` and in profiles).
    pub fn start(name: &str) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Err: every handle is gone, which is the signal to stop.
                let _ = runtime.block_on(stopped);
                // Tasks still here (connections of a gateway that is gone)
                // are dropped without waiting for them.
                runtime.shutdown_background();
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                handle,
                _stop: stop,
            }),
        })
    }

    /// Runs `future` on the network thread.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(future)
    }

    /// Wraps the QUIC port's `socket` for an endpoint on this thread, with
    /// its media side: every received datagram whose first byte says SRTP
    /// (RFC 9443) goes to `media`'s handler instead of QUIC.
    pub(crate) fn wrap_shared_socket(
        &self,
        socket: std::net::UdpSocket,
        media: Arc<MediaPort>,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _in = self.inner.handle.enter();
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        Ok(Arc::new(ProbedSocket {
            inner,
            media: Some(media),
        }))
    }

    /// The thread as a quinn runtime: an endpoint made with it runs its
    /// driver and every connection's driver on this thread.
    pub fn quinn_runtime(&self) -> Arc<dyn quinn::Runtime> {
        Arc::new(QuinnRuntime(self.clone()))
    }
}

/// quinn's tokio runtime, with timers, sockets and tasks on the network
/// thread whichever thread asks for them.
#[derive(Debug)]
struct QuinnRuntime(Thread);

impl quinn::Runtime for QuinnRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        let _in = self.0.inner.handle.enter();
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.0.inner.handle.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        t: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _in = self.0.inner.handle.enter();
        let socket = quinn::TokioRuntime.wrap_udp_socket(t)?;
        Ok(Arc::new(ProbedSocket {
            inner: socket,
            media: None,
        }))
    }
}

/// How long [`follow`] waits for a followed frame's packets before it gives
/// the frame up: a receiver whose connection closed, or dropped the frame
/// as stale, never gets a packet for it.
const GIVE_UP: Duration = Duration::from_secs(1);

/// Frames followed at once: enough that a slow frame does not keep the
/// frames after it from being sampled (which would favour quiet moments).
const MAX_FOLLOWED: usize = 16;

thread_local! {
    /// The frames being followed to the socket on this network thread.
    static PROBES: RefCell<Vec<Probe>> = const { RefCell::new(Vec::new()) };
}

/// A voice frame followed from its read to its packets handed to the socket.
struct Probe {
    read: Instant,
    /// Receivers no packet has been sent to since the frame was relayed.
    waiting: Vec<SocketAddr>,
    into: Arc<RelayLatency>,
}

/// Follows one relayed voice frame, read at `read`, to the socket: once a
/// packet has been handed to the socket for every address in `to` (the
/// receivers' connections, now holding the frame), the time since `read`
/// is recorded `into` the histogram. Call it on the network thread, right
/// after the relay; nothing is sent before the connections' drivers run.
///
/// Up to [`MAX_FOLLOWED`] frames at a time: returns `false`, following
/// nothing, while that many frames younger than [`GIVE_UP`] still wait for
/// their packets.
pub(crate) fn follow(read: Instant, to: Vec<SocketAddr>, into: Arc<RelayLatency>) -> bool {
    PROBES.with_borrow_mut(|probes| {
        probes.retain(|p| p.read.elapsed() < GIVE_UP);
        if probes.len() >= MAX_FOLLOWED {
            return false;
        }
        let waiting: Vec<SocketAddr> = to.into_iter().map(canonical).collect();
        if !waiting.is_empty() {
            probes.push(Probe {
                read,
                waiting,
                into,
            });
        }
        true
    })
}

/// A packet to `destination` was handed to the socket.
fn sent(destination: SocketAddr) {
    PROBES.with_borrow_mut(|probes| {
        if probes.is_empty() {
            return;
        }
        let destination = canonical(destination);
        probes.retain_mut(|p| {
            if let Some(i) = p.waiting.iter().position(|a| *a == destination) {
                p.waiting.swap_remove(i);
            }
            if p.waiting.is_empty() {
                p.into.record(p.read.elapsed());
                return false;
            }
            true
        });
    });
}

/// An IPv4 peer of a dual-stack socket as the IPv4 address it is.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// quinn's tokio socket, telling [`follow`] what it sends, and handing the
/// media packets that share its port to the media plane.
#[derive(Debug)]
struct ProbedSocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    media: Option<Arc<MediaPort>>,
}

impl quinn::AsyncUdpSocket for ProbedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)?;
        sent(transmit.destination);
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
        if let Some(media) = &self.media {
            for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
                media.divert(buf, meta);
            }
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

/// What becomes of the media packets (SRTP and SRTCP) that arrive on the
/// QUIC port: the media plane, set once the gateway is up.
pub(crate) trait MediaHandler: Send + Sync {
    /// One media packet from `from`, to be read (and decrypted) in place.
    /// Called on the network thread, inside the socket's receive: it must
    /// not block.
    fn packet(&self, from: SocketAddr, packet: &mut [u8]);
}

/// The media side of the QUIC port (docs/PROTOCOL.md, "Media plane"):
/// where its received media packets go, and the handle on the same socket
/// that media is sent through, in batches ([`queue`], [`flush`]).
pub struct MediaPort {
    handler: OnceLock<Arc<dyn MediaHandler>>,
    /// The port's socket (a second descriptor of it): media leaves from the
    /// port QUIC uses, so terminals see one address and NATs one binding.
    socket: std::net::UdpSocket,
    /// Whether the socket is IPv6 (then IPv4 peers are sent to as mapped
    /// addresses).
    v6: bool,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for MediaPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPort")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl MediaPort {
    /// The media side of `socket`, the QUIC port before it is wrapped.
    pub(crate) fn new(
        socket: &std::net::UdpSocket,
        metrics: Arc<Metrics>,
    ) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            handler: OnceLock::new(),
            v6: socket.local_addr()?.is_ipv6(),
            socket: socket.try_clone()?,
            metrics,
        }))
    }

    /// Sets where media packets go; until then they are dropped. Once.
    pub(crate) fn set_handler(&self, handler: Arc<dyn MediaHandler>) {
        let _ = self.handler.set(handler);
    }

    /// Takes the media packets out of one received buffer (GRO aware,
    /// `ptt_codec::srtp::divert`) and hands them to the handler; what is
    /// left is QUIC's.
    fn divert(&self, buf: &mut [u8], meta: &mut quinn::udp::RecvMeta) {
        let from = meta.addr;
        let handler = self.handler.get();
        meta.len = ptt_codec::srtp::divert(buf, meta.len, meta.stride, |packet| {
            if let Some(h) = handler {
                h.packet(from, packet);
            }
        });
    }

    /// `to` as this socket addresses it.
    fn destination(&self, to: SocketAddr) -> SocketAddr {
        match (self.v6, to) {
            (true, SocketAddr::V4(a)) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
            (false, SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddr::new(ip.into(), a.port()),
                None => to,
            },
            _ => to,
        }
    }
}

/// Media packets sent in one `sendmmsg`.
const BATCH: usize = 32;

/// Room for one media packet: the largest voice packet, protected.
const SLOT: usize = ptt_codec::srtp::voice::MAX_PACKET + ptt_codec::srtp::TAG_LEN;

/// Media packets written but not yet handed to the socket, on one thread.
struct Outgoing {
    port: Option<Arc<MediaPort>>,
    /// `BATCH` slots of `SLOT` bytes, allocated once per thread.
    bufs: Box<[u8]>,
    lens: [usize; BATCH],
    to: [SocketAddr; BATCH],
    n: usize,
}

thread_local! {
    static OUTGOING: RefCell<Outgoing> = RefCell::new(Outgoing {
        port: None,
        bufs: vec![0; BATCH * SLOT].into_boxed_slice(),
        lens: [0; BATCH],
        to: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
        n: 0,
    });
}

/// Queues one media packet to `to` through `port`: `write` fills the slot
/// it is given (at least the largest protected voice packet) and returns
/// the packet's length, or `None` to queue nothing. Packets go out in
/// batches of [`BATCH`]; call [`flush`] when the frame is relayed. No
/// allocation, no lock, no task. Returns whether a packet was queued.
pub(crate) fn queue(
    port: &Arc<MediaPort>,
    to: SocketAddr,
    write: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    OUTGOING.with_borrow_mut(|out| {
        if out.port.as_ref().is_some_and(|p| !Arc::ptr_eq(p, port)) {
            out.send();
        }
        let n = out.n;
        let slot = &mut out.bufs[n * SLOT..(n + 1) * SLOT];
        let Some(len) = write(slot).filter(|&len| len <= SLOT) else {
            return false;
        };
        out.lens[n] = len;
        out.to[n] = port.destination(to);
        out.port = Some(port.clone());
        out.n += 1;
        if out.n == BATCH {
            out.send();
        }
        true
    })
}

/// Hands every media packet queued on this thread to the socket.
pub(crate) fn flush() {
    OUTGOING.with_borrow_mut(Outgoing::send);
}

impl Outgoing {
    /// One `sendmmsg` (more if the kernel takes part of the batch); what
    /// the socket refuses is dropped and counted, never retried: voice is
    /// not queued behind newer voice.
    fn send(&mut self) {
        use rustix::io::Errno;
        use rustix::net::addr::SocketAddrArg;
        use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
        let n = std::mem::take(&mut self.n);
        let Some(port) = self.port.take() else {
            return;
        };
        if n == 0 {
            return;
        }
        let addrs: Vec<_> = self.to[..n].iter().map(SocketAddrArg::as_any).collect();
        let iovs: Vec<[io::IoSlice<'_>; 1]> = (0..n)
            .map(|i| {
                [io::IoSlice::new(
                    &self.bufs[i * SLOT..i * SLOT + self.lens[i]],
                )]
            })
            .collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
            (0..n).map(|_| SendAncillaryBuffer::default()).collect();
        let mut msgs: Vec<MMsgHdr<'_>> = addrs
            .iter()
            .zip(&iovs)
            .zip(controls.iter_mut())
            .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
            .collect();
        let (mut at, mut dropped) = (0, 0);
        while at < n {
            match sendmmsg(&port.socket, &mut msgs[at..], SendFlags::DONTWAIT) {
                Ok(0) | Err(Errno::AGAIN) => {
                    dropped += n - at;
                    break;
                }
                Ok(k) => {
                    for to in &self.to[at..at + k] {
                        sent(*to);
                    }
                    at += k;
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    // The first packet's destination refused it (say, an
                    // unreachable address): skip it, send the rest.
                    tracing::trace!(to = %self.to[at], "media packet not sent: {e}");
                    dropped += 1;
                    at += 1;
                }
            }
        }
        Metrics::add(&port.metrics.media_packets_out, (n - dropped) as u64);
        Metrics::add(&port.metrics.media_send_dropped, dropped as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_work_runs_on_the_named_thread() {
        let net = Thread::start("ptt-net-test").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        net.spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("ptt-net-test"));
    }

    #[test]
    fn timers_made_elsewhere_fire_on_the_thread() {
        let net = Thread::start("ptt-net-timer").unwrap();
        let rt = net.quinn_runtime();
        // Made outside any runtime: the network thread's timer wheel holds it.
        let mut timer = rt.new_timer(Instant::now() + std::time::Duration::from_millis(5));
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(Box::pin(async move {
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
            tx.send(()).unwrap();
        }));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the timer fired");
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_followed_frame_is_recorded_once_every_receiver_was_sent_to() {
        let h = Arc::new(RelayLatency::default());
        let read = Instant::now();
        assert!(follow(read, vec![addr(1), addr(2)], h.clone()));
        assert!(follow(read, vec![addr(2), addr(3)], h.clone()));
        sent(addr(9));
        sent(addr(2));
        assert_eq!(h.summary().count, 0, "both still wait for someone");
        // The dual-stack form of the same peer.
        sent("[::ffff:127.0.0.1]:1".parse().unwrap());
        assert_eq!(h.summary().count, 1);
        sent(addr(3));
        assert_eq!(h.summary().count, 2);
        // At most MAX_FOLLOWED frames wait at once.
        for _ in 0..MAX_FOLLOWED {
            assert!(follow(read, vec![addr(4)], h.clone()));
        }
        assert!(!follow(read, vec![addr(5)], h.clone()));
        sent(addr(4));
        assert_eq!(h.summary().count, 2 + MAX_FOLLOWED as u64);
        assert!(follow(read, vec![addr(5)], h.clone()));
        sent(addr(5));
    }

    #[test]
    fn a_frame_whose_packets_never_leave_is_given_up() {
        let h = Arc::new(RelayLatency::default());
        let long_ago = Instant::now() - GIVE_UP - Duration::from_millis(1);
        assert!(follow(long_ago, vec![addr(1)], h.clone()));
        // The next follow drops it.
        assert!(follow(Instant::now(), vec![addr(2)], h.clone()));
        sent(addr(1));
        assert_eq!(h.summary().count, 0, "the given-up frame is not recorded");
        sent(addr(2));
        assert_eq!(h.summary().count, 1);
    }

    #[test]
    fn packets_sent_through_the_thread_s_socket_reach_the_probe() {
        let net = Thread::start("ptt-net-probe").unwrap();
        let rt = net.quinn_runtime();
        let socket = rt
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = peer.local_addr().unwrap();
        let h = Arc::new(RelayLatency::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let h2 = h.clone();
        net.spawn(async move {
            assert!(follow(Instant::now(), vec![to], h2));
            let t = quinn::udp::Transmit {
                destination: to,
                ecn: None,
                contents: b"voice",
                segment_size: None,
                src_ip: None,
            };
            // As quinn does: wait for the socket to be writable, then send.
            let mut poller = socket.clone().create_io_poller();
            let r = loop {
                match socket.try_send(&t) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => break r.map_err(|e| e.to_string()),
                }
                if let Err(e) = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await {
                    break Err(e.to_string());
                }
            };
            tx.send(r).unwrap();
        });
        rx.recv().unwrap().unwrap();
        let mut buf = [0; 16];
        assert_eq!(peer.recv(&mut buf).unwrap(), 5);
        assert_eq!(h.summary().count, 1);
    }

    #[test]
    fn the_thread_ends_with_its_last_handle() {
        let net = Thread::start("ptt-net-end").unwrap();
        let task = net.spawn(std::future::pending::<()>());
        drop(net);
        // The runtime is shut down: its tasks are cancelled.
        let handle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = handle.block_on(task);
        assert!(r.unwrap_err().is_cancelled());
    }
}
