//! Failover between the nodes of a gateway cluster: the list of their
//! addresses, the order one terminal tries them in, the backoff between
//! attempts, and [`Failover`], which connects and reconnects with them.
//!
//! Every node of a cluster serves every terminal and presents the same
//! certificate, so a terminal may use any of them. It starts on the first
//! address of its own order ([`Gateways::order_for`]), which spreads a fleet
//! evenly over the nodes; when that node is lost, its terminals move to the
//! next address of their own orders, which spreads them evenly over the
//! nodes left rather than piling them onto one.

use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ptt_codec::{GroupId, TerminalId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, SeenAlerts, Terminal};

/// The addresses of a gateway cluster's nodes (one address for a single
/// gateway), in the order configured.
///
/// Parse one from `"A,B,C"`, each item `host:port` (an IP address, or a
/// name resolved once, when parsed: a blocking lookup, so parse at start-up
/// rather than on a runtime thread).
///
/// ```
/// use ptt_terminal::Gateways;
///
/// let nodes: Gateways = "10.0.0.1:4433, 10.0.0.2:4433,10.0.0.3:4433".parse()?;
/// assert_eq!(nodes.len(), 3);
/// // Each terminal has its own order: its first address is its home node.
/// let order = nodes.order_for(ptt_codec::TerminalId(501));
/// assert_eq!(order.len(), 3);
/// assert!("10.0.0.1:4433,,10.0.0.2:4433".parse::<Gateways>().is_err());
/// # Ok::<(), ptt_terminal::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateways(Vec<SocketAddr>);

impl Gateways {
    /// A list of `addrs`: at least one, none twice.
    pub fn new(addrs: Vec<SocketAddr>) -> Result<Gateways, Error> {
        if addrs.is_empty() {
            return Err(Error::Gateways("no address".into()));
        }
        for (i, a) in addrs.iter().enumerate() {
            if addrs[..i].contains(a) {
                return Err(Error::Gateways(format!("{a} is listed twice")));
            }
        }
        Ok(Gateways(addrs))
    }

    /// The addresses, as configured.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (a list has at least one address); for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every address in the order `terminal` tries them: highest random
    /// weight first (rendezvous hashing of the terminal id with each
    /// address). The first is the terminal's home node; a fleet's homes
    /// spread evenly over the nodes, and the terminals of a lost node take
    /// their second address, which spreads them evenly over the others.
    /// Adding or removing a node moves only the terminals whose home it
    /// was or becomes. The same on every run and device.
    pub fn order_for(&self, terminal: TerminalId) -> Vec<SocketAddr> {
        let mut order = self.0.clone();
        order.sort_by_key(|a| std::cmp::Reverse(weight(terminal, a)));
        order
    }
}

impl FromStr for Gateways {
    type Err = Error;

    fn from_str(s: &str) -> Result<Gateways, Error> {
        let mut addrs = Vec::new();
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(Error::Gateways(format!("an empty item in {s:?}")));
            }
            let addr = match item.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => item
                    .to_socket_addrs()
                    .map_err(|e| Error::Gateways(format!("{item:?}: {e}")))?
                    .next()
                    .ok_or_else(|| Error::Gateways(format!("{item:?} resolves to nothing")))?,
            };
            addrs.push(addr);
        }
        Gateways::new(addrs)
    }
}

impl From<SocketAddr> for Gateways {
    fn from(addr: SocketAddr) -> Gateways {
        Gateways(vec![addr])
    }
}

impl std::fmt::Display for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// The rendezvous weight of `addr` for `terminal`: FNV-1a over the
/// terminal id and the address, finished with SplitMix64's mixer so that
/// neighbouring ids and addresses give unrelated weights. Fixed here (not
/// std's hasher, which may change between Rust versions) so that every
/// device and run agrees.
fn weight(terminal: TerminalId, addr: &SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&terminal.0.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(ip) => eat(&ip.octets()),
        std::net::IpAddr::V6(ip) => eat(&ip.octets()),
    }
    eat(&addr.port().to_be_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// First ceiling of the reconnect delay.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);

/// Highest ceiling of the reconnect delay: a terminal whose every node is
/// unreachable tries about every 2.5 s on average, 5 s at most.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Shortest reconnect delay, whatever the draw: attempts that fail at once
/// (an address that refuses) never make a tight loop.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(10);

/// How long a connection must have lasted for the backoff to start again
/// from [`BACKOFF_FIRST`] after it is lost. A node that welcomes terminals
/// and drops them at once (overloaded, crash-looping) so meets growing
/// delays, not a reconnect loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Delays between connection attempts: exponential backoff with full
/// jitter. The ceiling starts at [`BACKOFF_FIRST`] (100 ms) and doubles
/// with every attempt up to [`BACKOFF_CAP`] (5 s); each delay is drawn
/// uniformly between [`BACKOFF_FLOOR`] (10 ms) and the ceiling, so that the
/// thousands of terminals that lost the same node come back spread out
/// rather than in waves.
///
/// ```
/// use std::time::Duration;
/// use ptt_terminal::Backoff;
///
/// let mut backoff = Backoff::default();
/// let mut rng = rand::thread_rng();
/// let first = backoff.next_delay(&mut rng);
/// assert!(first <= Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(), Duration::from_millis(200));
/// backoff.reset(); // connected, and the connection held
/// assert_eq!(backoff.ceiling(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Ceiling of the next delay.
    ceiling: Duration,
    /// Ceiling of the first delay, and after a reset.
    first: Duration,
    /// Highest ceiling.
    cap: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s ([`BACKOFF_FIRST`], [`BACKOFF_CAP`]).
    fn default() -> Self {
        Backoff::new(BACKOFF_FIRST, BACKOFF_CAP)
    }
}

impl Backoff {
    /// Ceilings from `first` doubling to `cap` (a load harness reconnecting
    /// thousands of terminals to one gateway may want its own).
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        let first = first.max(BACKOFF_FLOOR);
        Backoff {
            ceiling: first,
            first,
            cap: cap.max(first),
        }
    }

    /// The ceiling of the next delay (the longest it can be). An attempt
    /// made after it may be given twice that long to succeed.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The delay before the next attempt, drawn with `rng`; doubles the
    /// ceiling for the one after. Call before every attempt but a device's
    /// very first.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(self.cap);
        ceiling.mul_f64(rng.gen_range(0.0..=1.0)).max(BACKOFF_FLOOR)
    }

    /// Back to the first ceiling. Call once a connection has lasted
    /// [`STABLE_AFTER`] ([`Failover`] does).
    pub fn reset(&mut self) {
        self.ceiling = self.first;
    }
}

/// Longest one connection attempt may take by default, handshake and
/// `Welcome` together: an attempt to a dead node gets no answer at all and
/// would otherwise wait for the idle timeout (30 s). 10 s, not less: after
/// a node's loss the others queue the handshakes of its terminals (the
/// gateway serves the newest waiting 5 s at most), and an attempt abandoned
/// early wastes the work both sides put in.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a [`Failover`] terminal waits for a silent node before moving
/// to another: 6 s, keep-alives every 2 s. A node killed outright sends no
/// close, so this is how long its terminals hear nothing before failing
/// over; the keep-alive is one small packet every 2 s while the terminal
/// has nothing else to send (a listener's acknowledgements count).
pub const FAILOVER_IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// Connects one terminal to a gateway cluster and reconnects it when the
/// connection is lost: its addresses in its own order ([`Gateways::order_for`]),
/// [`Backoff`] between attempts, one TLS client configuration for all of
/// them (so a session ticket from one node resumes the session on another:
/// every node presents the same certificate under the same server name and
/// shares its ticket key), and the alerts already shown, so that an alert
/// the next node delivers again is not shown twice.
///
/// Keep one per terminal for its lifetime. Call [`Failover::connect`]
/// once, then [`Failover::reconnect`] whenever the terminal's connection
/// ends with an error that is not [`Error::is_final`], and join the groups
/// the new node did not restore ([`Terminal::rejoin`]).
#[derive(Debug)]
pub struct Failover {
    /// The endpoint connections start from.
    endpoint: quinn::Endpoint,
    /// This terminal's own client configuration: its TLS session tickets.
    client: quinn::ClientConfig,
    /// The addresses, in this terminal's order.
    order: Vec<SocketAddr>,
    /// Index in `order` of the next attempt.
    next: usize,
    /// The TLS server name every node's certificate carries.
    server_name: String,
    /// Who connects.
    terminal: TerminalId,
    /// Its provisioned credential.
    credential: Vec<u8>,
    /// Alerts shown so far, across every connection.
    seen: SeenAlerts,
    /// Delays between attempts.
    backoff: Backoff,
    /// The jitter's random source.
    rng: StdRng,
    /// Longest one attempt may take.
    attempt_timeout: Duration,
    /// The node of the current connection, and since when.
    current: Option<(SocketAddr, Instant)>,
}

impl Failover {
    /// A terminal `terminal` with `credential`, trusting `roots`, on the
    /// nodes `gateways` (all presenting a certificate for `server_name`),
    /// connecting from `endpoint`. Makes the terminal's own client
    /// configuration ([`crate::client_config`]).
    pub fn new(
        endpoint: quinn::Endpoint,
        roots: &rustls::RootCertStore,
        gateways: &Gateways,
        server_name: &str,
        terminal: TerminalId,
        credential: &[u8],
    ) -> Result<Failover, Error> {
        let mut client = crate::client_config(roots)?;
        crate::set_idle_timeout(&mut client, FAILOVER_IDLE_TIMEOUT);
        Ok(Failover {
            endpoint,
            client,
            order: gateways.order_for(terminal),
            next: 0,
            server_name: server_name.to_owned(),
            terminal,
            credential: credential.to_vec(),
            seen: SeenAlerts::default(),
            backoff: Backoff::default(),
            rng: StdRng::from_entropy(),
            attempt_timeout: ATTEMPT_TIMEOUT,
            current: None,
        })
    }

    /// Uses `client` instead of a configuration of its own (made with
    /// [`crate::client_config`], kept for this terminal alone: its session
    /// tickets live there).
    pub fn with_client_config(mut self, client: quinn::ClientConfig) -> Failover {
        self.client = client;
        self
    }

    /// Detects a dead node within `idle` instead of
    /// [`FAILOVER_IDLE_TIMEOUT`]: the connection
    /// sends keep-alives every third of it, and ends after `idle` without a
    /// packet from the node (the shorter of this and the gateway's idle
    /// timeout applies). A shorter time moves terminals off a dead node
    /// sooner, and costs a handset a keep-alive packet that much more
    /// often. At least 300 ms.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Failover {
        crate::set_idle_timeout(&mut self.client, idle);
        self
    }

    /// Gives each attempt `timeout` instead of [`ATTEMPT_TIMEOUT`].
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Failover {
        self.attempt_timeout = timeout;
        self
    }

    /// Uses `backoff` instead of the default (100 ms doubling to 5 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Failover {
        self.backoff = backoff;
        self
    }

    /// The node of the current (or last) connection.
    pub fn current(&self) -> Option<SocketAddr> {
        self.current.map(|(a, _)| a)
    }

    /// This terminal's addresses, in the order it tries them.
    pub fn order(&self) -> &[SocketAddr] {
        &self.order
    }

    /// The alerts shown on any of this terminal's connections so far.
    pub fn seen_alerts(&self) -> SeenAlerts {
        self.seen.clone()
    }

    /// Connects the first time: the terminal's home node first, then the
    /// next address after each failed attempt, with [`Backoff`] between
    /// them, until one welcomes it. Ends only with a connection or a final
    /// error ([`Error::is_final`]: a revoked or refused credential); wrap it
    /// in a timeout to give up earlier.
    pub async fn connect(&mut self) -> Result<Terminal, Error> {
        self.attempts(false).await
    }

    /// Connects again after the terminal's connection was lost: to the next
    /// address (the lost node may be dead), after a first delay of the
    /// backoff, then as [`Failover::connect`]. The backoff starts again
    /// from its first ceiling if the lost connection had lasted
    /// [`STABLE_AFTER`]. Take the unread alerts of the old terminal first
    /// ([`Terminal::take_unread_alerts`]); the new node delivers every alert
    /// not yet receipted again, and those already shown are not shown twice.
    pub async fn reconnect(&mut self) -> Result<Terminal, Error> {
        if let Some((_, since)) = self.current {
            if since.elapsed() >= STABLE_AFTER {
                self.backoff.reset();
            }
        }
        self.next = (self.next + 1) % self.order.len();
        self.attempts(true).await
    }

    /// Attempts from `self.next` on, waiting a backoff delay before each
    /// (before the first too if `wait`).
    async fn attempts(&mut self, mut wait: bool) -> Result<Terminal, Error> {
        loop {
            if wait {
                let delay = self.backoff.next_delay(&mut self.rng);
                tokio::time::sleep(delay).await;
            }
            wait = true;
            let addr = self.order[self.next];
            match self.attempt(addr).await {
                Ok(t) => {
                    self.current = Some((addr, Instant::now()));
                    return Ok(t);
                }
                Err(e) if e.is_final() => return Err(e),
                Err(e) => {
                    tracing::debug!(
                        terminal = self.terminal.0,
                        %addr,
                        "connection attempt failed, trying the next address: {e}"
                    );
                    self.next = (self.next + 1) % self.order.len();
                }
            }
        }
    }

    /// One attempt at `addr`, within the attempt timeout.
    async fn attempt(&mut self, addr: SocketAddr) -> Result<Terminal, Error> {
        let connect = Terminal::connect_with_config(
            &self.endpoint,
            self.client.clone(),
            addr,
            &self.server_name,
            self.terminal,
            &self.credential,
            self.seen.clone(),
        );
        tokio::time::timeout(self.attempt_timeout, connect)
            .await
            .map_err(|_| Error::Timeout(self.attempt_timeout))?
    }
}

impl Terminal {
    /// Joins those of `groups` that the gateway did not restore on connect
    /// (`Welcome` lists the groups it kept for a reconnect; a node that had
    /// not seen this terminal before restores none). Call right after a
    /// reconnect, with the groups the terminal was in.
    pub async fn rejoin(&mut self, groups: &[GroupId]) -> Result<(), Error> {
        let restored: Vec<GroupId> = self.welcome().groups.iter().map(|m| m.group).collect();
        for g in groups.iter().filter(|g| !restored.contains(g)) {
            self.join(*g).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u16) -> Gateways {
        Gateways::new(
            (0..n)
                .map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 4433)))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn address_lists_parse_and_bad_ones_are_refused() {
        let g: Gateways = "127.0.0.1:4433,127.0.0.1:4434 , [::1]:4435"
            .parse()
            .unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g.addrs()[2], "[::1]:4435".parse().unwrap());
        assert_eq!(g.to_string(), "127.0.0.1:4433,127.0.0.1:4434,[::1]:4435");
        let one: Gateways = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(
            one,
            Gateways::from(SocketAddr::from(([127, 0, 0, 1], 4433)))
        );
        assert_eq!(
            "localhost:4433".parse::<Gateways>().unwrap().addrs()[0].port(),
            4433
        );
        for bad in [
            "",
            ",",
            "127.0.0.1:4433,",
            "127.0.0.1",
            "127.0.0.1:70000",
            "127.0.0.1:4433,127.0.0.1:4433",
            "not an address",
        ] {
            assert!(
                matches!(bad.parse::<Gateways>(), Err(Error::Gateways(_))),
                "{bad:?}"
            );
        }
        assert!(Gateways::new(Vec::new()).is_err());
    }

    #[test]
    fn a_fleet_spreads_evenly_and_a_lost_nodes_terminals_spread_over_the_rest() {
        let g = nodes(3);
        let mut home = [0usize; 3];
        let mut second_of_lost = [0usize; 3];
        for t in 1..=30_000 {
            let order = g.order_for(TerminalId(t));
            assert_eq!(order.len(), 3);
            let first = g.addrs().iter().position(|a| *a == order[0]).unwrap();
            home[first] += 1;
            if first == 0 {
                let second = g.addrs().iter().position(|a| *a == order[1]).unwrap();
                second_of_lost[second] += 1;
            }
        }
        for n in home {
            assert!((9_000..=11_000).contains(&n), "homes {home:?}");
        }
        assert_eq!(second_of_lost[0], 0);
        let lost = home[0];
        for n in &second_of_lost[1..] {
            assert!(
                (lost * 4 / 10..=lost * 6 / 10).contains(n),
                "the lost node's terminals went {second_of_lost:?}"
            );
        }
        // Stable: the same order every time; and removing a node moves only
        // the terminals whose home it was.
        assert_eq!(g.order_for(TerminalId(7)), g.order_for(TerminalId(7)));
        let fewer = Gateways::new(g.addrs()[1..].to_vec()).unwrap();
        for t in 1..=1000 {
            let before = g.order_for(TerminalId(t));
            if before[0] != g.addrs()[0] {
                assert_eq!(fewer.order_for(TerminalId(t))[0], before[0]);
            }
        }
    }

    #[test]
    fn backoff_is_bounded_jittered_and_starts_over_after_a_reset() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::default();
        let ceilings_ms = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ms in ceilings_ms {
            assert_eq!(b.ceiling(), Duration::from_millis(ms));
            let d = b.next_delay(&mut rng);
            assert!(
                d >= BACKOFF_FLOOR && d <= Duration::from_millis(ms),
                "{d:?} outside 10..={ms} ms"
            );
        }
        // Full jitter: delays at the cap cover the whole range, not one value.
        let at_cap: Vec<Duration> = (0..200).map(|_| b.next_delay(&mut rng)).collect();
        assert!(at_cap
            .iter()
            .all(|d| *d <= BACKOFF_CAP && *d >= BACKOFF_FLOOR));
        assert!(at_cap.iter().any(|d| *d < Duration::from_secs(1)));
        assert!(at_cap.iter().any(|d| *d > Duration::from_secs(4)));
        b.reset();
        assert_eq!(b.ceiling(), BACKOFF_FIRST);
        // Never a tight loop, even with a zero first step.
        let mut tiny = Backoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            assert!(tiny.next_delay(&mut rng) >= BACKOFF_FLOOR);
        }
    }

    #[tokio::test]
    async fn failed_attempts_move_on_to_the_next_address_with_growing_delays() {
        // Nothing listens on these ports of loopback: every attempt fails
        // by its timeout, so what is tested is the order and the backoff.
        let roots = rustls::RootCertStore::empty();
        let endpoint = crate::endpoint("127.0.0.1:0".parse().unwrap(), &roots).unwrap();
        let dead: Vec<SocketAddr> = (0..3)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.local_addr().unwrap()
            })
            .collect();
        let g = Gateways::new(dead).unwrap();
        let mut f = Failover::new(endpoint, &roots, &g, "localhost", TerminalId(9), &[0; 32])
            .unwrap()
            .with_attempt_timeout(Duration::from_millis(50));
        let order = f.order().to_vec();
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_millis(1500), f.connect()).await;
        assert!(r.is_err(), "no node answers: still trying");
        // Attempts went round the addresses and the ceiling grew: after at
        // most 1.5 s of 50 ms attempts plus delays, it is past its first.
        assert!(f.backoff.ceiling() > BACKOFF_FIRST);
        assert!(started.elapsed() >= Duration::from_millis(1500));
        assert_eq!(f.current(), None);
        assert_eq!(f.order(), order.as_slice());
        // A reconnect after a connection that did not hold keeps the
        // grown ceiling; one after a stable connection starts over.
        let grown = f.backoff.ceiling();
        f.current = Some((order[0], Instant::now()));
        let _ = tokio::time::timeout(Duration::from_millis(1), f.reconnect()).await;
        assert!(f.backoff.ceiling() >= grown);
        f.current = Some((order[0], Instant::now() - STABLE_AFTER));
        let next = f.next;
        let _ = tokio::time::timeout(Duration::from_millis(1), f.reconnect()).await;
        assert_eq!(f.next, (next + 1) % 3, "moved to the next address");
        assert!(
            f.backoff.ceiling() <= BACKOFF_FIRST * 2,
            "reset, one delay drawn"
        );
    }
}
