//! What QUIC itself costs the gateway per relayed voice frame, with no
//! socket, task or timer in the way: a `quinn-proto` gateway endpoint and a
//! terminal endpoint with one or 4,096 connections between them, made with
//! the gateway's and the terminal library's own TLS and transport settings,
//! exchanging packets in memory.
//!
//! `cargo bench -p ptt-bench --bench quic`
//!
//! Only the gateway's side is timed, which is what a gateway pays per
//! delivery whatever drives its connections: queue the datagram, build and
//! seal the packet (`poll_transmit`), ask for the next timer, and, for every
//! second frame, take the listener's ACK (`Endpoint::handle`, decrypt,
//! loss detection and congestion control). The terminal's work (decrypting,
//! sending that ACK) happens between the timed parts. After each size the
//! bench prints the two halves, sending and taking ACKs, separately.
//!
//! The frames go round-robin over the connections, as a relay's do. With one
//! connection everything stays in the core's caches; with 4,096, as at the
//! city's voice peak, each delivery finds its connection's state evicted by
//! the 4,095 others, and the figure is what the gateway really pays: it
//! matches the share of `quinn-proto`, rustls and ring in a perf profile of
//! `ptt-bench --workload city-voice-peak`. That figure plus the kernel's cost
//! of sending the packet and receiving the ACK is the floor for any driver
//! built on `quinn-proto`, a custom one included (BENCHMARKS.md, "the floor
//! under the CPU target").

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig,
    ServerConfig,
};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000);

/// A gateway endpoint and a terminal endpoint with `n` connections between
/// them, handshakes done. Connection `i` of one side talks to connection `i`
/// of the other.
struct Net {
    server: Side,
    client: Side,
}

/// One endpoint and its connections.
struct Side {
    endpoint: Endpoint,
    addr: SocketAddr,
    conns: Vec<(ConnectionHandle, Connection)>,
    index: HashMap<ConnectionHandle, usize>,
}

impl Side {
    fn new(server: Option<ServerConfig>, addr: SocketAddr, seed: u8) -> Self {
        Self {
            endpoint: Endpoint::new(
                Arc::new(EndpointConfig::default()),
                server.map(Arc::new),
                false,
                Some([seed; 32]),
            ),
            addr,
            conns: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(&mut self, (handle, conn): (ConnectionHandle, Connection)) {
        self.index.insert(handle, self.conns.len());
        self.conns.push((handle, conn));
    }

    fn conn(&mut self, i: usize) -> &mut Connection {
        &mut self.conns[i].1
    }

    /// Hands one received UDP payload to the endpoint and its connection.
    /// Returns a packet the endpoint answers by itself, if any.
    fn receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        match self
            .endpoint
            .handle(now, from, None, None, BytesMut::from(data), &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let conn = self
                    .endpoint
                    .accept(incoming, now, &mut buf, None)
                    .expect("the server accepts");
                self.add(conn);
                None
            }
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                let i = self.index[&handle];
                self.conn(i).handle_event(event);
                None
            }
            Some(DatagramEvent::Response(t)) => Some(buf[..t.size].to_vec()),
            None => None,
        }
    }

    /// Routes connection `i`'s events to its endpoint and back.
    fn settle(&mut self, i: usize) {
        let Some((handle, conn)) = self.conns.get_mut(i) else {
            return;
        };
        while let Some(event) = conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(*handle, event) {
                conn.handle_event(back);
            }
        }
        while conn.poll().is_some() {}
    }

    /// Packets connection `i` wants to send now.
    fn transmits(&mut self, i: usize, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some((_, conn)) = self.conns.get_mut(i) else {
            return out;
        };
        let mut buf = Vec::new();
        while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            out.push(buf[..t.size].to_vec());
            buf.clear();
        }
        out
    }
}

impl Net {
    fn new(n: usize, server: ServerConfig, client: ClientConfig) -> Self {
        let mut net = Self {
            server: Side::new(Some(server), SERVER, 7),
            client: Side::new(None, CLIENT, 9),
        };
        for i in 0..n {
            let conn = net
                .client
                .endpoint
                .connect(Instant::now(), client.clone(), SERVER, "localhost")
                .expect("client connects");
            net.client.add(conn);
            for _ in 0..50 {
                net.exchange(i, Instant::now());
            }
            assert!(
                !net.client.conn(i).is_handshaking() && !net.server.conn(i).is_handshaking(),
                "the handshake completes in memory"
            );
        }
        net
    }

    /// Moves every pending packet of pair `i` both ways once.
    fn exchange(&mut self, i: usize, now: Instant) {
        for p in self.client.transmits(i, now) {
            if let Some(r) = self.server.receive(now, self.client.addr, &p) {
                self.client.receive(now, SERVER, &r);
            }
        }
        self.server.settle(i);
        for p in self.server.transmits(i, now) {
            if let Some(r) = self.client.receive(now, SERVER, &p) {
                self.server.receive(now, self.client.addr, &r);
            }
        }
        self.client.settle(i);
    }
}

fn configs() -> (ServerConfig, ClientConfig) {
    let dir = std::env::temp_dir().join(format!("ptt-bench-quic-{}", std::process::id()));
    let config = ptt_gateway::Config {
        data_dir: dir.clone(),
        ..Default::default()
    };
    let id = ptt_gateway::tls::identity(&config).expect("self-signed certificate");
    let metrics = Arc::new(ptt_gateway::metrics::Metrics::default());
    let server =
        ptt_gateway::tls::server_config(&id, &config.transport, &metrics).expect("server config");
    let roots = ptt_terminal_sim::terminal::load_ca(&id.cert_path).expect("CA");
    let client = ptt_terminal_sim::terminal::client_config(&roots).expect("client config");
    let _ = std::fs::remove_dir_all(dir);
    (server, client)
}

/// Connections a bench round-robins over: one, hot in the core's caches; and
/// about as many as listen at the city's voice peak (5 % of 7,019 units
/// talking to their members and station consoles), whose state no longer
/// fits in a core's 2 MiB L2, as in the gateway.
const CONNECTIONS: [usize; 2] = [1, 4096];

fn datagram_send(c: &mut Criterion) {
    let (server, client) = configs();
    // A 20 ms Opus frame at 16 kbit/s behind the 13-byte voice header.
    let frame = Bytes::from(vec![0x5a; 53]);
    let mut buf = Vec::with_capacity(1500);
    let mut g = c.benchmark_group("quic");
    g.throughput(Throughput::Elements(1));
    for n in CONNECTIONS {
        let mut net = Net::new(n, server.clone(), client.clone());
        let mut next = 0;
        // The two halves of the timed work, over every iteration criterion
        // runs, printed after the bench as a breakdown.
        let (mut send_time, mut ack_time, mut count) = (Duration::ZERO, Duration::ZERO, 0u32);
        g.bench_function(
            BenchmarkId::new(
                "server_cost_per_delivered_frame",
                format!("{n}_connections"),
            ),
            |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let i = next;
                        next = (next + 1) % n;
                        // The gateway hands the frame to the connection and
                        // builds the packet, as its connection driver does.
                        let start = Instant::now();
                        let conn = net.server.conn(i);
                        conn.datagrams()
                            .send(frame.clone(), true)
                            .expect("datagrams enabled");
                        buf.clear();
                        let t = conn
                            .poll_transmit(start, 1, &mut buf)
                            .expect("a packet to send");
                        black_box(conn.poll_timeout());
                        let sent = start.elapsed();
                        let packet = buf[..t.size].to_vec();
                        // The listener reads it and, every second packet, ACKs.
                        let now = Instant::now();
                        net.client.receive(now, SERVER, &packet);
                        net.client.settle(i);
                        let acks = net.client.transmits(i, now);
                        let start = Instant::now();
                        for ack in acks {
                            net.server.receive(start, CLIENT, &ack);
                        }
                        net.server.settle(i);
                        let conn = net.server.conn(i);
                        buf.clear();
                        black_box(conn.poll_transmit(start, 1, &mut buf));
                        black_box(conn.poll_timeout());
                        let acked = start.elapsed();
                        timed += sent + acked;
                        send_time += sent;
                        ack_time += acked;
                        count += 1;
                    }
                    timed
                });
            },
        );
        // The figure must include the ACK work it claims to: one ACK frame
        // per two datagrams, as listeners send at voice rates.
        let (mut sent, mut acks) = (0, 0);
        for (_, conn) in &net.server.conns {
            let stats = conn.stats();
            sent += stats.frame_tx.datagram;
            acks += stats.frame_rx.acks;
        }
        assert!(acks * 3 >= sent, "ACKs {acks} for {sent} datagrams");
        println!(
            "quic, {n} connections: {sent} datagrams sent, {acks} ACK frames received; \
             per delivered frame {:.2} us sending, {:.2} us taking ACKs",
            send_time.as_secs_f64() * 1e6 / f64::from(count),
            ack_time.as_secs_f64() * 1e6 / f64::from(count),
        );
    }
    g.finish();
}

criterion_group!(benches, datagram_send);
criterion_main!(benches);
