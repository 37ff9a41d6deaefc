//! A slower, lossier network than loopback, in user space: every datagram
//! a client endpoint sends leaves its socket a fixed delay later
//! ([`DelayedSocket`]), and voice frames can be lost on the way to a
//! listener ([`Loss`]).
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
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Simulated loss of voice frames on one listener's downlink: each frame
/// the gateway delivered is dropped with a fixed probability, independently
/// (Bernoulli), from a seeded generator so that a run repeats.
///
/// `terminal-sim run --loss PCT` gives every simulated terminal one, seeded
/// from the run's seed and the terminal's id: listeners of a group lose
/// different frames, as handsets on different radio links do. It applies to
/// voice only, on the receive side, after the harness has counted the frame
/// as delivered (the gateway did deliver it) and before the terminal plays
/// it. The control stream is never touched: floor, alerts and receipts go
/// through as before, as QUIC would retransmit them on a lossy path anyway.
/// Voice travels in QUIC datagrams (or SRTP), which nobody retransmits, so
/// dropping a received voice frame is what a lost packet does to it.
#[derive(Debug, Clone)]
pub struct Loss {
    /// Probability of dropping a frame, 0..=1.
    rate: f64,
    rng: StdRng,
}

impl Loss {
    /// A loss of `percent` (0..=100, clamped) whose draws follow from `seed`.
    pub fn new(percent: f64, seed: u64) -> Loss {
        let rate = if percent.is_finite() {
            (percent / 100.0).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Loss {
            rate,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The loss of one terminal in a run: seeded from the run's `seed` and
    /// the terminal, so each terminal loses its own frames and a run with
    /// the same seed loses the same ones.
    pub fn for_terminal(percent: f64, seed: u64, terminal: u32) -> Loss {
        // A multiplier with no common factor with 2^64 spreads nearby ids.
        Loss::new(
            percent,
            seed ^ u64::from(terminal).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        )
    }

    /// Whether the next frame is lost. Call once per received voice frame.
    pub fn drops(&mut self) -> bool {
        // No draw at 0 %: a run without loss costs nothing.
        self.rate > 0.0 && self.rng.gen_bool(self.rate)
    }

    /// The probability of a drop, 0..=1.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// Parses a `--loss` percentage: a number from 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|e| format!("not a number: {e}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{v} is not a percentage from 0 to 100"));
    }
    Ok(v)
}

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

    fn drops(loss: &mut Loss, n: usize) -> Vec<bool> {
        (0..n).map(|_| loss.drops()).collect()
    }

    #[test]
    fn loss_is_seeded_and_near_its_rate() {
        let n = 20_000;
        for percent in [5.0, 10.0, 30.0] {
            let a = drops(&mut Loss::new(percent, 7), n);
            assert_eq!(
                a,
                drops(&mut Loss::new(percent, 7), n),
                "same seed, same drops"
            );
            assert_ne!(
                a,
                drops(&mut Loss::new(percent, 8), n),
                "another seed differs"
            );
            let share = a.iter().filter(|d| **d).count() as f64 / n as f64 * 100.0;
            // Binomial standard deviation at 10 %, 20,000 draws: 0.21 points.
            assert!(
                (share - percent).abs() < 1.5,
                "{percent} % asked, {share:.2} % dropped"
            );
        }
    }

    #[test]
    fn no_loss_drops_nothing_and_full_loss_everything() {
        assert!(!drops(&mut Loss::new(0.0, 1), 1000).contains(&true));
        assert!(!drops(&mut Loss::new(f64::NAN, 1), 1000).contains(&true));
        assert!(!drops(&mut Loss::new(100.0, 1), 1000).contains(&false));
        assert_eq!(Loss::new(250.0, 1).rate(), 1.0);
    }

    #[test]
    fn terminals_lose_different_frames() {
        let a = drops(&mut Loss::for_terminal(10.0, 1, 100), 2000);
        let b = drops(&mut Loss::for_terminal(10.0, 1, 101), 2000);
        assert_ne!(a, b);
        assert_eq!(a, drops(&mut Loss::for_terminal(10.0, 1, 100), 2000));
    }

    #[test]
    fn loss_percentages_parse_within_0_to_100() {
        assert_eq!(parse_percent("5"), Ok(5.0));
        assert_eq!(parse_percent("7.5%"), Ok(7.5));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("five").is_err());
        assert!(parse_percent("NaN").is_err());
    }

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
