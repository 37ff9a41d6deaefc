//! A slower network than loopback, in user space: every datagram a client
//! endpoint sends leaves its socket a fixed delay later.
//!
//! Terminals in the field sit behind cellular paths with round trips of
//! 50-150 ms, and some of the gateway's behaviour depends on it: how often
//! listeners acknowledge (the ACK-frequency extension lets the gateway ask
//! for fewer ACKs only up to one round trip apart), when lost packets are
//! declared lost, how fast congestion windows open. On loopback every round
//! trip is a few microseconds. This machine's kernel has no `netem` queueing
//! discipline, so the harness delays its own packets: `terminal-sim run
//! --delay-ms N` adds N ms to the round trip of every simulated terminal.
//!
//! Only the terminals' sending side is delayed, which is all a round trip
//! needs; the gateway's packets reach the terminals at loopback speed. The
//! delay costs the harness, never the gateway: the gateway's CPU figures
//! stay its own.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A socket whose sends leave `delay` after quinn hands them over, in the
/// order they were handed over. Receives are untouched.
pub struct DelayedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    delay: Duration,
    queue: mpsc::UnboundedSender<Delayed>,
}

impl fmt::Debug for DelayedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedSocket")
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// A datagram (or a GSO batch of them) waiting for its time.
struct Delayed {
    due: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    contents: Vec<u8>,
    segment_size: Option<usize>,
    src_ip: Option<IpAddr>,
}

impl DelayedSocket {
    /// Wraps `inner`; the task that sends delayed datagrams runs on the
    /// current tokio runtime until the socket is dropped.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, delay: Duration) -> Arc<Self> {
        let (queue, due) = mpsc::unbounded_channel();
        tokio::spawn(send_when_due(inner.clone(), due));
        Arc::new(Self {
            inner,
            delay,
            queue,
        })
    }
}

/// A client endpoint for the harness's terminals bound to `bind`, as
/// [`crate::terminal::endpoint`], whose packets leave `delay` late: every
/// round trip its terminals make is `delay` longer. Call it inside the
/// runtime the endpoint will run on.
pub fn endpoint(
    bind: SocketAddr,
    roots: &rustls::RootCertStore,
    delay: Duration,
) -> Result<quinn::Endpoint, crate::terminal::Error> {
    let mut socket = crate::terminal::socket(bind)?;
    if !delay.is_zero() {
        socket = DelayedSocket::new(socket, delay);
    }
    crate::terminal::endpoint_with_socket(socket, roots)
}

/// Sends each queued datagram at its time. All share one delay, so the
/// queue is in time order.
async fn send_when_due(socket: Arc<dyn AsyncUdpSocket>, mut due: mpsc::UnboundedReceiver<Delayed>) {
    let mut writable = socket.clone().create_io_poller();
    while let Some(d) = due.recv().await {
        if d.due > Instant::now() {
            tokio::time::sleep_until(d.due).await;
        }
        let transmit = Transmit {
            destination: d.destination,
            ecn: d.ecn,
            contents: &d.contents,
            segment_size: d.segment_size,
            src_ip: d.src_ip,
        };
        loop {
            match socket.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready =
                        std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx)).await;
                    if ready.is_err() {
                        break;
                    }
                }
                // Sent, or failed: a datagram lost on the way, as on any
                // path. quinn recovers what needs recovering.
                _ => break,
            }
        }
    }
}

impl AsyncUdpSocket for DelayedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // `try_send` never blocks, so quinn never waits on this.
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.queue
            .send(Delayed {
                due: Instant::now() + self.delay,
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents: transmit.contents.to_vec(),
                segment_size: transmit.segment_size,
                src_ip: transmit.src_ip,
            })
            .map_err(|_| io::Error::other("the delayed sender stopped"))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
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

    #[tokio::test]
    async fn datagrams_leave_after_the_delay_in_order() {
        let runtime = quinn::default_runtime().unwrap();
        let inner = runtime
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let delay = Duration::from_millis(60);
        let socket = DelayedSocket::new(inner, delay);
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let sent = Instant::now();
        for n in 0..3u8 {
            socket
                .try_send(&Transmit {
                    destination: to,
                    ecn: None,
                    contents: &[n; 4],
                    segment_size: None,
                    src_ip: None,
                })
                .unwrap();
        }
        let mut buf = [0; 8];
        for n in 0..3u8 {
            let len = peer.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..len], &[n; 4], "in the order sent");
        }
        assert!(sent.elapsed() >= delay, "left after {:?}", sent.elapsed());
    }

    #[tokio::test]
    async fn an_endpoint_with_a_delay_sends_its_first_packet_late() {
        let delay = Duration::from_millis(60);
        let roots = rustls::RootCertStore::empty();
        let endpoint = endpoint("127.0.0.1:0".parse().unwrap(), &roots, delay).unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = Instant::now();
        let _connecting = endpoint
            .connect(peer.local_addr().unwrap(), "localhost")
            .unwrap();
        let mut buf = [0; 2048];
        peer.recv(&mut buf).await.unwrap();
        assert!(sent.elapsed() >= delay, "left after {:?}", sent.elapsed());
    }
}
